"""Episodic memory: the write path (validate, embed, store) and reads of sessions."""

from engram.memory.writer import MessageIn, add_messages, estimate_tokens

__all__ = ["MessageIn", "add_messages", "estimate_tokens"]
