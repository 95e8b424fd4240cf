"""Typed, versioned records of the stages' outputs: `fit` (a fit folder's fit.json) and `render` (a render
folder's cameras.json and the shard samples built from its views). Each reads, checks (format_version) and
writes one format; the stages and their readers use nothing else."""
