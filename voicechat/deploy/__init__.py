"""Several voicechat processes behind one reverse proxy, sharing conversations in Redis (docs/deploy.md)."""
