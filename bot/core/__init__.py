"""The Discord-free core: jobs and their gate, inline flags, the image store, paging.

Nothing in this package imports discord (a test checks it); the cogs and the presentation layer
turn interactions into calls here and outcomes into messages.
"""
