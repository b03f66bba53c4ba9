"""Real stores on free loopback ports for `dmb up`, the tests and the benchmarks."""

from dmb.localstack.process import StackError
from dmb.localstack.stack import LocalStack, read_state, scratch_data_dir

__all__ = ["LocalStack", "StackError", "read_state", "scratch_data_dir"]
