"""Helpers shared by the test suite: loopback servers and processes with bounded waits."""
