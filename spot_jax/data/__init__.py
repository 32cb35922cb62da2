"""The input pipeline: seqio tasks to training and evaluation batches (below train/ and
evaluation/)."""
