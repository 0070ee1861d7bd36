"""The Python client (``backend.client.client``) and the ``segue`` command (``backend.client.cli``).

Installable without the server's dependencies: ``pip install segue`` needs only ``requests`` and
``pydantic``; the server's packages are the ``server`` extra."""
