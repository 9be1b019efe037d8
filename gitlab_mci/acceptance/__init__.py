"""The acceptance suite: the user's journey, run against the simulator or a real project, with its own cleanup.

``target`` says where the journey runs (the environment names it) and what it will create and cost; ``inventory``
finds what a run left, by run id and ownership marker; ``journey`` runs the steps; ``cleanup`` removes a run.
"""
