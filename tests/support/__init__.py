"""Helpers shared by the tests: speech, feeders, servers, raw sockets, a fake Hub."""
