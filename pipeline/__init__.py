"""HyperNAS pipeline: search spaces, the predictor, its loss, one trainer, evaluation."""
import warnings

# torch_geometric imports torch.jit.script at import time; torch 2.14 warns on every start.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
