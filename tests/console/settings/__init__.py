"""Settings: the strict parser, its declarations and the README table made from them, SQLite options."""
