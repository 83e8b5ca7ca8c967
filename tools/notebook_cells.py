"""Write every code cell of notebooks/*.ipynb as its own .py file, so a code reader that knows no notebooks (a linter,
a duplicate finder) sees each cell as the unit it is in Jupyter.

    python tools/notebook_cells.py OUT_DIR        # OUT_DIR/04_classify_cell03.py, ...
"""

import json
import sys
from pathlib import Path

notebooks = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for path in notebooks:
    code = [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]
    for k, cell in enumerate(code, start=1):
        (out / f"{path.stem}_cell{k:02d}.py").write_text("".join(cell["source"]) + "\n")
print(f"{sum(1 for _ in out.glob('*_cell*.py'))} cells of {len(notebooks)} notebooks in {out}")
