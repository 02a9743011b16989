"""Who is calling, what they may do, and the limits every request and connection passes."""
