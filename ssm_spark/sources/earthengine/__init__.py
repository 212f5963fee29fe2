"""Earth Engine source: request builders on the project's grid, exports with a task manager, point
sampling, credentials (see :mod:`.requests`, :mod:`.export`, :mod:`.sample`, :mod:`.client`).

Nothing here imports ``ee`` at module import time: the package is importable without
earthengine-api, and without network or credentials the request graphs still build and serialise
(:func:`ssm_spark.sources.earthengine.client.offline`).
"""
