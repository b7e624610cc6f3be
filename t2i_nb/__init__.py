__version__ = "0.1.0"

import warnings
# fastai.layers applies @torch.jit.script when it is imported, and recent torch deprecates that with a FutureWarning that
# every t2i_* command would print; it is fastai's to change, so it is silenced here, before any module imports fastai.
warnings.filterwarnings('ignore', message=r'.*torch\.jit\.script.* is deprecated', category=FutureWarning)
