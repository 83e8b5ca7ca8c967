"""The paper's method: engine (the error tensor), rules (decisions), confidence (uncertainty scores), explain
(maps)."""
