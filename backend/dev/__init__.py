"""Development only: the ``make run`` supervisor (``devstack``) and the embedded Redis and MongoDB servers."""
