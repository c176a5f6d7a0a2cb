"""Echo's DIND ("determinism in, determinism out") test kernel and log replayer, ported to warpmesh.

``replay_log(path)`` runs one of Echo's ``.eintlog`` golden logs through the motion-demo kernel and returns
the state hash after every step; the ``warpmesh engine replay`` command wraps it.
"""
