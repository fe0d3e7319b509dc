"""Run inside FiftyOne's own environment by tests/tools/test_fiftyone.py.

``python fiftyone_roundtrip.py FALV_FOLDER EXPORT_DIR``: load falv's FiftyOne export with
FiftyOne's own importer (FiftyOneTemporalDetectionDataset, media manifest data.json),
print every sample's temporal detections as JSON, then export the dataset again with
FiftyOne's exporter into EXPORT_DIR (media copied to data/, frame supports).
"""

import json
import sys

import fiftyone as fo

folder, export_dir = sys.argv[1], sys.argv[2]
dataset = fo.Dataset.from_dir(dataset_dir=folder, dataset_type=fo.types.FiftyOneTemporalDetectionDataset,
                              data_path="data.json", label_field="ground_truth")
out = {}
for sample in dataset:
    detections = sample["ground_truth"]
    out[sample.filepath] = [{"label": d.label, "support": list(d.support), "confidence": d.confidence}
                            for d in (detections.detections if detections is not None else [])]
dataset.export(export_dir=export_dir, dataset_type=fo.types.FiftyOneTemporalDetectionDataset,
               label_field="ground_truth")
print(json.dumps({"version": fo.__version__, "samples": out}))
