"""mappo: multi-agent PPO with a centralised critic for PettingZoo ParallelEnvs."""
from .config import Config
from .protocol import Batched
from .seeds import SeedStack
from .trainer import Trainer

__all__ = ["Batched", "Config", "SeedStack", "Trainer"]
__version__ = "0.1.0"
