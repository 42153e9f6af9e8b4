"""What a paper reports: a study definition evaluated over cases (:mod:`.evaluate`), its
plots (:mod:`.plots`) and printed tables (:mod:`.tables`)."""
