"""Engram Memory: a self-hosted memory server for AI agents."""
