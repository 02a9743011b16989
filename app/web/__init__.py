"""What the service answers over HTTP: routers, pages, templates, the live feed."""
