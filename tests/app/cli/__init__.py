"""Tests of the timer-service command line: the terminal client and doctor."""
