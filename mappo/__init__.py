"""mappo: multi-agent PPO with a centralised critic for PettingZoo ParallelEnvs."""
from .config import Config
from .trainer import Trainer

__all__ = ["Config", "Trainer"]
__version__ = "0.1.0"
