"""Every file degrade reads from a run dir or a data path is parsed here, once, into validated
records; every violation becomes one InputError line naming the file, the field and what was
expected. Nothing else in degrade parses these files.

- files.py          regular files only, size caps, no links out of the run dir (weights aside)
- json_doc.py       bounded JSON: size, depth, number length, BOM/UTF-16, lone surrogates
- trainer_state.py  trainer_state.json and degrade/scalars.jsonl -> typed log records
- model_config.py   config.json: types and sizes, checked against the weights before a build
- weights_header.py safetensors headers and *.index.json weight maps
- data_rows.py      data rows: token-id lists, labels, groups

limits.py holds every bound with the reason for its value.
"""
