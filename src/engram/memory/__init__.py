"""Episodic memory: the write path (classify, encrypt, embed, store) and protected reads."""

from engram.crypto import reveal
from engram.memory.writer import MessageIn, add_messages, estimate_tokens

__all__ = ["MessageIn", "add_messages", "estimate_tokens", "reveal"]
