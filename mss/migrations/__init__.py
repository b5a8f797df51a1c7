"""Alembic migrations of the database schema (mss/schema.py runs them; docs/database.md).

``env.py`` takes the connection it is given (``config.attributes["connection"]``): no
``alembic.ini`` at run time. ``versions/`` holds one linear chain from ``0001`` (the schema
of mss/db.py before migrations existed).
"""
