"""Reading and writing files: STAR, MRC, cryoSPARC ``.cs``, YAML/JSON, all writes atomic."""
