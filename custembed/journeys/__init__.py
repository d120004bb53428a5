"""System B, in-store journeys: the numpy/pandas/torch-free cores the journey jobs run in Spark's Python workers.

Data side:

* ``layout``: store layouts (``conf/stores/*.yaml``) and their vectorised geometry;
* ``codes``: the six-character hierarchical location code of a 50 cm cell;
* ``text``: the journey text (codes and ``$<zone>`` purchase markers), written and parsed;
* ``simulate``: simulated shoppers (the embedded default's positions and till scans);
* ``pauses``: DBSCAN pauses, their zones and purchase markers.

Model side: ``tokenizer`` (byte-level BPE), ``markov`` (the Markov-chain baseline),
``metrics`` (Jensen-Shannon divergences); the Spark transforms of the journey jobs are in
``custembed.jobs.journeys_frames``.

No pyspark in this package. The jobs are ``custembed.jobs.journeys_*``;
``docs/journeys.md`` describes both sides.
"""
