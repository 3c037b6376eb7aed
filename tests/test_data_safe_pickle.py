"""The allow-list unpickler: NumPy arrays and plain containers load; anything else is refused unrun."""
import os
import pickle

import numpy as np
import pytest

from mamlbook.data import BadPickleError, UnsafePickleError, load_miniimagenet, safe_load
from mamlbook.data.safe_pickle import safe_loads


class WritesAFile:
    """Unpickling this with plain pickle.load runs os.system and creates ``target``."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


class CallsEval:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


def test_plain_pickle_would_run_the_payload(tmp_path):
    """The control: the payload really does create the file when unpickled without the allow-list."""
    target = tmp_path / "pwned"
    pickle.loads(pickle.dumps(WritesAFile(target)))
    assert target.exists()


def test_payload_that_writes_a_file_is_refused_and_not_run(tmp_path):
    target = tmp_path / "pwned"
    data = pickle.dumps({"image_data": np.zeros((1, 2, 2, 3), np.uint8), "x": WritesAFile(target)})
    with pytest.raises(UnsafePickleError, match="system.*refused and nothing from the file was executed"):
        safe_loads(data)
    assert not target.exists()


def test_payload_calling_eval_is_refused():
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_loads(pickle.dumps(CallsEval()))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_and_containers_load_unchanged(protocol):
    obj = {"image_data": np.arange(2 * 84 * 84 * 3, dtype=np.uint8).reshape(2, 84, 84, 3),
           "class_dict": {"n01532829": [0, 1], "n01558993": np.array([1], dtype=np.int64)},
           "scalar": np.int64(7), "t": (1.5, "s", b"bytes", None)}
    out = safe_loads(pickle.dumps(obj, protocol=protocol))
    assert np.array_equal(out["image_data"], obj["image_data"])
    assert out["class_dict"]["n01532829"] == [0, 1]
    assert out["class_dict"]["n01558993"].tolist() == [1]
    assert out["scalar"] == 7 and out["t"] == (1.5, "s", b"bytes", None)


def test_malicious_learn2learn_pickle_is_refused_by_the_loader(tmp_path):
    target = tmp_path / "pwned"
    with open(tmp_path / "mini-imagenet-cache-train.pkl", "wb") as f:
        pickle.dump({"image_data": np.zeros((1, 84, 84, 3), np.uint8),
                     "class_dict": {"n01532829": WritesAFile(target)}}, f)
    with pytest.raises(UnsafePickleError, match="mini-imagenet-cache-train.pkl"):
        load_miniimagenet(tmp_path, "train", progress=False)
    assert not target.exists()
    assert not (tmp_path / "mini-imagenet-train.npz").exists()


def test_safe_load_reads_a_file(tmp_path):
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps([np.ones(3, np.float32)]))
    assert safe_load(path)[0].tolist() == [1.0, 1.0, 1.0]


def test_truncated_bytes_are_a_bad_pickle_named_by_their_source():
    data = pickle.dumps({"image_data": np.zeros((2, 84, 84, 3), np.uint8)})
    with pytest.raises(BadPickleError) as info:
        safe_loads(data[:len(data) // 2], source="cache.pkl")
    assert str(info.value) == (f"cache.pkl is truncated ({len(data) // 2:,} bytes; the download or copy stopped "
                               "early); get a complete copy of the file again (see docs/data.md)")
