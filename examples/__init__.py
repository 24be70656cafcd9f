"""Conveyor in the web frameworks users come from: the same small app in FastAPI and in Flask.

``tasks.py`` is the task both submit; ``report.html`` the page both serve; README.md says how to
run them.
"""
