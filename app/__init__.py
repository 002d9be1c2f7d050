"""Application shell: settings, ASGI app, context, broadcast, outbox relay, command line."""
