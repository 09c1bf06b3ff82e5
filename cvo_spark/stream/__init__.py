"""`cvo stream`: trigger offers on recharge and quota events (Structured Streaming)."""
