"""The HTTP API: one blueprint per resource (``jobs``, ``workflows``, ``streams``,
``schedules``, ``tasks``, ``service``, ``dashboard``, ``docs``), with what they share:
``responses`` (bodies, streams, queries), ``errors`` (the one table from exceptions to
answers), ``auth`` and ``runtime``.

Routes change jobs through the scheduler and read through ``service.reads``; ``service.app``
puts them together.
"""
