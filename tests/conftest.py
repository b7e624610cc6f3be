"Fixtures shared by the test files."
import pytest
from t2i_nb.shapes import make_shapes
from t2i_nb.pretrain import pretrain, PretrainConfig


@pytest.fixture(scope='session')
def tiny_shapes(tmp_path_factory):
    "`(root, encoders)`: 40 built-in shapes images at 32 px and DAMSM encoders (nef 32) pre-trained on them for one epoch, made once per session."
    d = tmp_path_factory.mktemp('tiny_shapes')
    root = make_shapes(d/'shapes', n=40, size=32, seed=0)
    enc = pretrain(PretrainConfig(root=str(root), image_size=32, nef=32, bs=8, epochs=1, valid_every=0), out=d/'enc',
                   progress=False, log=lambda *a: None).out
    return root, enc
