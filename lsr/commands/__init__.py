"""The `lsr` subcommands owned by this package (registered through entry points)."""
