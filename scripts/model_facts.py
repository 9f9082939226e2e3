"""Write bench/models/facts.json: every built-in model's facts, derived with transformers.

Run after adding a built-in model or upgrading transformers (tests/test_models.py fails
when the stored facts differ from what transformers resolves):

    python scripts/model_facts.py
"""

import json
from pathlib import Path

from bench import models
from bench.models import facts

out = {}
for name in models.builtin_names():
    spec = models.get(name)
    out[facts.key(spec.model_type, spec.config)] = facts.derive(spec).to_dict()
path = Path(models.__file__).with_name("facts.json")
path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")
print(f"wrote {path} ({len(out)} models)")
