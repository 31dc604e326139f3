"""The work list of an MPI job is rank 0's: ranks that test the outputs for themselves race."""
from polishplugin.programs.parallel import my_share, pending


class _Board:
    sent = None


class _Rank:
    """Two ranks of one job: what rank 0 broadcasts is what rank 1 receives."""
    size = 2

    def __init__(self, rank, board):
        self.rank, self.board = rank, board

    def bcast(self, obj, root=0):
        if self.rank == root:
            self.board.sent = obj
            return obj
        return self.board.sent


def test_a_late_rank_takes_its_share_of_rank_0s_list():
    """Resumed job, micrographs a, b, c to do: rank 0 lists them and finishes a before rank 1
    starts; rank 1, seeing a done, must still take b (its share of rank 0's list), else b
    is done by no rank."""
    items = ["a", "b", "c", "d"]
    board = _Board()
    r0, r1 = _Rank(0, board), _Rank(1, board)
    done_at_start, done_later = {"d"}, {"d", "a"}
    first = my_share(pending(items, done_at_start.__contains__, r0), r0)
    second = my_share(pending(items, done_later.__contains__, r1), r1)
    assert first == ["a", "c"] and second == ["b"]
    assert sorted(first + second) == ["a", "b", "c"]
