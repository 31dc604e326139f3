"""Gaussian-process motion prior (seed zivanov2019 §2.1.2, eq. 2-5).

Velocities of all particles in one frame follow N(0, Sigma_V) per axis, with the exponential
kernel of eq. 2 evaluated on the initial particle positions. The eigendecomposition of eq. 3
(Sigma_V is symmetric positive semi-definite, so its SVD is its eigendecomposition) gives the
basis b_i = sqrt(lambda_i) w_i of eq. 4, in which the velocity prior is a standard normal in the
coefficients (eq. 5). All quantities in pixels and frames (see :mod:`.units`).

Memory: Sigma_V and the basis are P x P float64 (P particles of a micrograph). The basis is made
in Sigma_V's memory: LAPACK's dsyevd (the routine behind ``numpy.linalg.eigh``, from numpy's own
LAPACK, so the same numbers bit for bit) overwrites it with the eigenvectors, which are then
put in order in place. Peak 3 P^2 float64 (dsyevd's workspace is 2 P^2) instead of
``eigh``'s 5 P^2 (input, its copy, workspace, output).
With at most K < P dimensions (RELION's ``--max_ed``) and a Krylov space smaller than P, only the
K leading eigenpairs are made (:func:`leading_eigenpairs`: Lanczos on products with Sigma_V formed
from the positions), never a P x P array: memory O(P K), time O(P^2 K).
"""
import ctypes

import numpy as np
from numba import njit
from numpy.linalg import _umath_linalg

#: float64 values of Sigma_V's temporaries per block of rows
BLOCK_VALUES = 1 << 18


def velocity_covariance(positions, sigma_vel_px, sigma_div_px, kernel="exp"):
    """Sigma_V (P, P) of eq. 2: sigma_V^2 exp(-d / sigma_D), d = distance of initial positions.

    ``kernel="sq_exp"`` gives RELION's ``--sq_exp_ker`` variant sigma_V^2 exp(-d^2 / (2 sigma_D)).
    sigma_div_px <= 0 makes particles independent (Sigma_V = sigma_V^2 I). Made a block of rows
    at a time: one P x P array and temporaries of ``BLOCK_VALUES`` float64.
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    _check_kernel(kernel)
    if sigma_div_px <= 0:
        return sigma_vel_px ** 2 * np.eye(len(pos))
    out = np.empty((len(pos), len(pos)))
    rows = _block_rows(len(pos))
    for r in range(0, len(pos), rows):
        _covariance_rows(pos, r, out[r:r + rows], sigma_vel_px, sigma_div_px, kernel)
    return out


def _check_kernel(kernel):
    if kernel not in ("exp", "sq_exp"):
        raise ValueError("unknown kernel %r (exp or sq_exp)" % kernel)


def _block_rows(P):
    return max(1, BLOCK_VALUES // max(1, P))


def _covariance_rows(pos, r, d, sigma_vel_px, sigma_div_px, kernel):
    """Rows r .. r + len(d) of Sigma_V (sigma_div_px > 0) written into d (len(d), P)."""
    p = pos[r:r + len(d)]
    np.hypot(p[:, None, 0] - pos[None, :, 0], p[:, None, 1] - pos[None, :, 1], out=d)
    if kernel == "exp":
        np.divide(d, -sigma_div_px, out=d)        # -d / s: the same number as -(d / s)
    else:
        np.multiply(d, d, out=d)
        np.multiply(d, -0.5, out=d)
        np.divide(d, sigma_div_px, out=d)
    np.exp(d, out=d)
    np.multiply(d, sigma_vel_px ** 2, out=d)


@njit(cache=True)
def _covariance_product(pos, v, var, sigma_div, exp_kernel):
    """Sigma_V v, each kernel value made once (lower triangle) and used twice; O(P) memory."""
    P = pos.shape[0]
    out = var * v                               # the diagonal: exp(0) = 1
    for i in range(P):
        xi, yi, vi = pos[i, 0], pos[i, 1], v[i]
        acc = 0.0
        for j in range(i):
            dx, dy = xi - pos[j, 0], yi - pos[j, 1]
            if exp_kernel:
                k = var * np.exp(-np.sqrt(dx * dx + dy * dy) / sigma_div)
            else:
                k = var * np.exp(-0.5 * (dx * dx + dy * dy) / sigma_div)
            acc += k * v[j]
            out[j] += k * vi
        out[i] += acc
    return out


def krylov_size(P, k):
    """Lanczos vectors :func:`leading_eigenpairs` keeps for k of P eigenpairs (scipy's eigsh
    default, at most P)."""
    return min(P, max(2 * k + 1, 20))


def leading_eigenpairs(positions, sigma_vel_px, sigma_div_px, k, kernel="exp"):
    """The k largest eigenvalues of Sigma_V (decreasing) and their eigenvectors (P, k), without
    Sigma_V: ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``, to machine
    precision) on products Sigma_V v made from the positions (:func:`_covariance_product`: each
    kernel value formed once per product, nothing P x P held). Memory O(P :func:`krylov_size`);
    time O(P^2) per product times the products (~2.5 k; their count returned third). Needs
    0 < k < P and a Krylov space smaller than P (else the dense path of :func:`gp_basis`). The
    start vector is fixed (seeded): the same numbers every run."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    _check_kernel(kernel)
    P = len(pos)
    ncv = krylov_size(P, k)
    if not 0 < k < P or ncv >= P:
        raise ValueError("leading_eigenpairs needs 0 < k and a Krylov space (%d) smaller than "
                         "P (%d)" % (ncv, P))
    if sigma_div_px <= 0:                       # sigma_V^2 I: any k unit vectors
        return np.full(k, sigma_vel_px ** 2), np.eye(P, k), 0
    count = [0]

    def matvec(v):
        count[0] += 1
        return _covariance_product(pos, np.asarray(v, dtype=np.float64).reshape(P),
                                   sigma_vel_px ** 2, sigma_div_px, kernel == "exp")
    op = LinearOperator((P, P), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(P)
    lam, w = eigsh(op, k=k, which="LA", ncv=ncv, v0=v0, tol=0)
    order = np.argsort(lam)[::-1]
    return lam[order], np.asfortranarray(w[:, order]), count[0]


def _numpy_dsyevd():
    """numpy's own LAPACK dsyevd with 64-bit integers (the one ``numpy.linalg.eigh`` calls),
    found through the handle of numpy.linalg's extension module; None where it is not there."""
    try:
        lib = ctypes.CDLL(_umath_linalg.__file__)
    except OSError:
        return None
    for name in ("dsyevd_64_", "scipy_dsyevd_64_"):
        f = getattr(lib, name, None)
        if f is not None:
            f.restype = None
            return f
    return None


_DSYEVD = _numpy_dsyevd()


def eigh_in_place(sym):
    """Eigenvalues (ascending) and eigenvectors of the symmetric C-contiguous float64 array
    ``sym`` (P, P), whose memory is overwritten: on return ``sym[j]`` is the eigenvector of
    eigenvalue j. The same numbers as ``numpy.linalg.eigh(sym)`` (UPLO "L": LAPACK dsyevd with the
    workspace sizes it queries). Without numpy's dsyevd: ``numpy.linalg.eigh`` and a copy."""
    n = sym.shape[0]
    if sym.dtype != np.float64 or not sym.flags.c_contiguous or sym.shape != (n, n):
        raise ValueError("eigh_in_place needs a square C-contiguous float64 array")
    if _DSYEVD is None or n == 0:
        lam, w = np.linalg.eigh(sym)
        sym[...] = w.T
        return lam
    i64, dbl = ctypes.c_int64, ctypes.POINTER(ctypes.c_double)
    size, info, lam = i64(n), i64(0), np.empty(n)
    a = sym.T                                  # the same matrix (symmetric), Fortran order

    def call(work, lwork, iwork, liwork):
        _DSYEVD(b"V", b"L", ctypes.byref(size), a.ctypes.data_as(dbl), ctypes.byref(size),
                lam.ctypes.data_as(dbl), work.ctypes.data_as(dbl), ctypes.byref(i64(lwork)),
                iwork.ctypes.data_as(ctypes.POINTER(i64)), ctypes.byref(i64(liwork)),
                ctypes.byref(info), ctypes.c_size_t(1), ctypes.c_size_t(1))
        if info.value != 0:
            raise np.linalg.LinAlgError("dsyevd failed (info %d)" % info.value)
    wq, iq = np.empty(1), np.empty(1, np.int64)
    call(wq, -1, iq, -1)                       # workspace query, as numpy does
    lwork, liwork = int(wq[0]), int(iq[0])
    call(np.empty(lwork), lwork, np.empty(liwork, np.int64), liwork)
    return lam


def _permute_rows(m, perm):
    """m[k] = (m before)[perm[k]] for every k, in place (one temporary row)."""
    done = np.zeros(len(perm), dtype=bool)
    tmp = np.empty(m.shape[1:], dtype=m.dtype)
    for start in range(len(perm)):
        if done[start]:
            continue
        done[start] = True
        if perm[start] == start:
            continue
        tmp[...] = m[start]
        k = start
        while perm[k] != start:
            m[k] = m[perm[k]]
            k = perm[k]
            done[k] = True
        m[k] = tmp


def gp_basis(positions, sigma_vel_px, sigma_div_px, max_dims=None, rel_eps=1e-10, kernel="exp"):
    """Basis of eq. 3-4: returns (B (P, D), lambdas (D,)) with columns b_i = sqrt(lambda_i) w_i,
    eigenvalues in decreasing order, those below ``rel_eps * max`` dropped, at most ``max_dims``
    (None or <= 0: all). B B^T = Sigma_V on the kept subspace and B^T B = diag(lambda).
    B is Fortran-ordered (as ``eigh``'s eigenvectors), made in Sigma_V's memory (module doc);
    with max_dims < P and :func:`krylov_size` < P by :func:`leading_eigenpairs` (no P x P array;
    the same eigenpairs to rounding, up to sign)."""
    if sigma_vel_px <= 0:
        raise ValueError("sigma_vel must be positive (got %g px/frame)" % sigma_vel_px)
    P = np.asarray(positions).reshape(-1, 2).shape[0]
    if max_dims is not None and 0 < max_dims < P and krylov_size(P, max_dims) < P:
        lam, w, _ = leading_eigenpairs(positions, sigma_vel_px, sigma_div_px, max_dims, kernel)
        dims = int(np.sum(lam > rel_eps * lam[0]))
        return np.multiply(w[:, :dims], np.sqrt(lam[:dims])[None, :], order="F"), lam[:dims]
    m = velocity_covariance(positions, sigma_vel_px, sigma_div_px, kernel)
    if m.shape[0] == 0:
        raise ValueError("no particles: the motion prior needs at least one position")
    lam = eigh_in_place(m)                     # m[j]: eigenvector j
    order = np.argsort(lam)[::-1]
    lam = lam[order]
    keep = lam > rel_eps * lam[0]              # a prefix: lam decreasing
    if max_dims is not None and max_dims > 0:
        keep &= np.arange(len(lam)) < max_dims
    dims = int(keep.sum())
    _permute_rows(m, order)
    w = m.T                                    # column i: eigenvector of the i-th largest
    scale = np.sqrt(lam[:dims])[None, :]
    if dims == len(lam):
        return np.multiply(w, scale, out=w), lam[:dims]
    return w[:, :dims] * scale, lam[:dims]
