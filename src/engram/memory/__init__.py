"""Episodic memory: the write path (classify, encrypt, embed, store) and protected reads."""

from engram.memory import reveal
from engram.memory.writer import MessageIn, add_messages, estimate_tokens

__all__ = ["MessageIn", "add_messages", "estimate_tokens", "reveal"]
