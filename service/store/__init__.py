"""The store's backends: ``sqlite.py`` (one file, one service) and ``postgres.py`` (one
database, one or several services), behind ``base.Store``; ``groupcommit.py`` is what they
share. The service reaches them through ``service.db``."""
