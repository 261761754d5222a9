"""``autoprune adapt``'s algorithms: STAMP's meta-trained mask generator (``adapt.stamp``), which prunes a
network for a new task's data in one pass; the run itself is :func:`autoprune.api.adapt`."""
