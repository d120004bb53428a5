"""System B, in-store journeys: the numpy/pandas cores the journey jobs run in Spark's Python workers.

* ``layout``: store layouts (``conf/stores/*.yaml``) and their vectorised geometry;
* ``codes``: the six-character hierarchical location code of a 50 cm cell;
* ``text``: the journey text (codes and ``$<zone>`` purchase markers), written and parsed;
* ``simulate``: simulated shoppers (the embedded default's positions and till scans);
* ``pauses``: DBSCAN pauses, their zones and purchase markers.

No pyspark here. The jobs are ``custembed.jobs.journeys_simulate`` and
``custembed.jobs.journeys_prepare``; ``docs/journeys.md`` describes the data side.
"""
