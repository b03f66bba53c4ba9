"""The one boundary every domain deployment shares: identity in, status codes out.

`@serves(service)` turns a plain class whose methods are named after the RPCs of a proto service
into a Serve deployment class. Each method is written the way it reads:

    async def GetPost(self, request: pb.GetPostRequest, caller: Caller) -> pb.GetPostResponse

(public methods, marked `(dmb.v1.public)` in the .proto, take no caller), and the decorator
gives it the signature Serve calls it with, in two ways with the same request message:
- in-cluster by the gateway through a DeploymentHandle, with `caller=` set to the identity the
  gateway verified (handles are unreachable from outside the cluster, so this cannot be forged)
  and the caller's `write_position`, which the gateway read during admission;
- from outside through Serve's gRPC ingress, with `grpc_context`: then the caller must present the
  same JWT in the `authorization` metadata, verified here exactly as the gateway does, and the
  call is charged to the same token buckets the gateway charges (`_admit`).
Before the body runs, the request is checked against the field rules its .proto declares
(protovalidate: serve_apps.validation) and the process's store clients are opened (once).

Domain errors (a broken rule, a missing post, a bad token) are answers, not failures:
- on the gRPC ingress the method sets the status, with `google.rpc.BadRequest` field violations
  in the status details, and returns an empty reply instead of raising, because Serve sends
  the trailing metadata that carries the details only for a method that returns;
- behind the gateway they propagate unchanged (Ray re-raises them there), and Serve's "Request
  failed" log line for them loses its traceback (`QuietDomainErrors`): a traceback in the logs
  means a bug, never a client's bad input.
A Redis that is down or refuses writes (out of memory) is UNAVAILABLE (503), with a message
saying so (`dmb.stores.redis.store_refusal`), never INTERNAL. A caller the gateway could not
check for revocation (Redis missed or failed) is checked here, in Postgres if need be, before
the method runs (`TokenVerifier.confirm`). Anything else is a bug: logged with its traceback
and answered INTERNAL.

The decorator also adds `Batch`, which the gateway uses under load: many calls of the service's
RPCs in one handle call (dmb/coalescing.py), each run concurrently through its
method's boundary and answered with its reply or its domain error.

Each call also carries its `origin` (dmb.tracing carrier: the request id and, tracing on, the
gateway's span): per call, not per handle call, because a coalesced batch holds many requests.
The method runs in a span of its own under that parent, with the request id on every log line;
on the gRPC ingress the id comes from the `x-request-id` metadata or Serve, and the trace starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status
from ray import serve

from dmb import tracing
from dmb.composition import Components
from dmb.domain.client_address import client_address, grpc_peer_host
from dmb.domain.identity import Caller, bearer_token
from dmb.errors import DomainError, Internal, TooManyAttempts, Unauthenticated, Unavailable
from dmb.stores import read_your_writes
from dmb.stores.read_your_writes import WritePosition
from dmb.stores.redis import store_refusal
from dmb.v1 import options_pb2
from serve_apps import validation
from serve_apps.status_details import status_of

log = logging.getLogger("dmb.rpc")
Deployment = TypeVar("Deployment", bound=type)
# One call in a batch: the RPC's name, its request, what the gateway knows of the caller, and
# the request's origin (its id and trace context: dmb.tracing carrier).
Call = tuple[str, Message, Caller | None, WritePosition | None, tracing.Carrier | None]
# gRPC status codes that are the server's failure (OpenTelemetry's rule for RPC server spans);
# other domain errors are answers to a client and leave the span OK.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
SERVE_LOGGER = "ray.serve"  # ray.serve._private.constants.SERVE_LOGGER_NAME


class QuietDomainErrors(logging.Filter):
    """Serve logs every exception a replica method raises, with its traceback. A DomainError is
    an answer the caller gets with its status, so keep one line (at INFO) and drop the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, DomainError):
            record.msg = f"{record.getMessage()} {type(error).__name__}: {error.message}"
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_domain_errors(logger: logging.Logger) -> None:
    """Install QuietDomainErrors on `logger` once (idempotent)."""
    if not any(isinstance(f, QuietDomainErrors) for f in logger.filters):
        logger.addFilter(QuietDomainErrors())


class RpcDeployment:
    """What a class under `@serves` holds: the process's components."""

    components: Components


def serves(service: ServiceDescriptor) -> Callable[[Deployment], Deployment]:
    """Class decorator: every RPC of `service` must be a method of the class; each becomes a
    Serve-callable method with identity, read-your-writes and error translation done here."""

    def decorate(cls: Deployment) -> Deployment:
        quiet_domain_errors(logging.getLogger(SERVE_LOGGER))
        for method in service.methods:
            body = cls.__dict__.get(method.name)
            if body is None:
                raise TypeError(f"{cls.__name__} does not implement {method.full_name}")
            setattr(cls, method.name, _serve_method(method, body))
        cls.Batch = _batch_method(frozenset(service.methods_by_name))  # type: ignore[attr-defined]
        return cls

    return decorate


def _is_public(method: MethodDescriptor) -> bool:
    return bool(method.GetOptions().Extensions[options_pb2.public])


def _serve_method(
    method: MethodDescriptor, body: Callable[..., Awaitable[Message]]
) -> Callable[..., Awaitable[Message]]:
    public = _is_public(method)
    reply_type = message_factory.GetMessageClass(method.output_type)
    span_name = f"{method.containing_service.full_name}/{method.name}"
    attributes: tracing.Attributes = {
        "rpc.system": "grpc",
        "rpc.service": method.containing_service.full_name,
        "rpc.method": method.name,
    }

    async def call(
        self: RpcDeployment,
        request: Message,
        grpc_context: Any = None,
        caller: Caller | None = None,
        write_position: WritePosition | None = None,
        origin: tracing.Carrier | None = None,
    ) -> Message:
        if grpc_context is not None:
            origin = _grpc_origin(grpc_context)
        started = time.perf_counter()
        with tracing.incoming(
            origin, span_name, tracing.SERVER, attributes, fail_on_exception=False
        ) as span:
            try:
                reply = await answer(self, request, grpc_context, caller, write_position)
                log.debug("%s answered in %.1f ms", span_name, _ms_since(started))
                return reply
            except DomainError as exc:
                log.debug("%s refused: %s", span_name, exc.code.name)
                span.set_attribute("rpc.grpc.status_code", exc.code.value[0])
                if exc.code in _SERVER_FAULTS:
                    tracing.failed(span, exc.message)
                raise
            except Exception as exc:
                tracing.failed(span, type(exc).__name__, exc)
                raise

    async def answer(
        self: RpcDeployment,
        request: Message,
        grpc_context: Any,
        caller: Caller | None,
        write_position: WritePosition | None,
    ) -> Message:
        try:
            try:
                validation.check(request)
                await self.components.ready()
                if public and grpc_context is None:
                    return await body(self, request)
                who = None if public else await _identify(self.components, grpc_context, caller)
                if grpc_context is not None:  # the gateway admitted its own calls already
                    write_position = await _admit(self.components, grpc_context, who)
                if public:
                    return await body(self, request)
                assert who is not None
                who = await self.components.verifier.confirm(who)  # unless the gateway knew
                with read_your_writes.known(write_position):
                    return await body(self, request, who)
            except Exception as exc:
                refused = store_refusal(exc)  # Redis down or out of memory: 503, not 500
                if refused is None:
                    raise
                raise refused from exc
        except DomainError as exc:
            if grpc_context is None:
                raise
            _answer(grpc_context, exc)
            return reply_type()
        except Exception:
            log.exception("%s failed", method.full_name)
            if grpc_context is not None:
                grpc_context.set_code(grpc.StatusCode.INTERNAL)
                grpc_context.set_details("internal error")
            raise

    # Serve inspects the signature to decide whether to pass `grpc_context`; copy the name and
    # docs only (functools.wraps would make inspect report the body's own signature).
    call.__name__ = call.__qualname__ = method.name
    call.__doc__ = body.__doc__
    return call


def _batch_method(
    names: frozenset[str],
) -> Callable[[Any, list[Call]], Awaitable[list[Message | DomainError]]]:
    async def Batch(self: Any, calls: list[Call]) -> list[Message | DomainError]:
        """Every call through its method, concurrently; each answer in the order asked."""

        async def one(call: Call) -> Message | DomainError:
            name, request, caller, write_position, origin = call
            if name not in names:
                return Internal(f"no RPC named {name!r}")
            try:
                reply: Message = await getattr(self, name)(
                    request, caller=caller, write_position=write_position, origin=origin
                )
            except DomainError as exc:
                return exc
            except Exception:  # logged by the method's boundary
                return Internal("internal error")
            return reply

        return list(await asyncio.gather(*(one(call) for call in calls)))

    return Batch


def _answer(grpc_context: Any, error: DomainError) -> None:
    """Set a domain error's status on the gRPC call: code, message, and the rich status (with
    field violations, when there are any) in the `grpc-status-details-bin` trailer."""
    status = rpc_status.to_status(status_of(error))
    grpc_context.set_code(status.code)
    grpc_context.set_details(status.details)
    grpc_context.set_trailing_metadata(list(status.trailing_metadata))


async def _identify(components: Components, grpc_context: Any, caller: Caller | None) -> Caller:
    """The verified caller: from the gateway (`caller`) or from the gRPC metadata's token."""
    if caller is not None:
        return caller
    if grpc_context is None:
        raise Unauthenticated("no caller identity")
    return await components.verifier.verify(bearer_token(_metadata(grpc_context, "authorization")))


async def _admit(
    components: Components, grpc_context: Any, caller: Caller | None
) -> WritePosition | None:
    """The gateway's admission for a call on the gRPC ingress: the same buckets (per client
    address, and per user once authenticated), so Login over gRPC is as rate-limited as over
    HTTP. Returns the caller's write position, read in the same round trip."""
    address = client_address(
        _metadata(grpc_context, "x-forwarded-for"),
        grpc_peer_host(grpc_context.peer()),
        components.settings.trusted_proxy_hops,
    )
    admitted = await components.admission.admit(address, caller)
    decision = admitted.decision
    if decision is None:
        raise Unavailable("rate limiter unavailable (failing closed)")
    if not decision.allowed:
        wait = max(1, decision.retry_after_seconds)
        raise TooManyAttempts(f"rate limit exceeded; retry after {wait} s", wait)
    if admitted.revoked:
        raise Unauthenticated("access token has been revoked")
    return admitted.write_position


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def serve_request_id() -> str | None:
    """Serve's id for the request being served (the one in Serve's own log lines)."""
    try:
        request_id = serve.context._get_serve_request_context().request_id
    except Exception:  # private API: without it, a fresh id
        return None
    return str(request_id) if request_id else None


def _grpc_origin(grpc_context: Any) -> tracing.Carrier:
    """A gRPC ingress call's request id: the client's `x-request-id` when sane, else Serve's,
    else a new one. Its trace starts here, as at the gateway: a client's `traceparent` is not
    trusted, since its sampled flag would let any client switch on tracing of its calls."""
    request_id = tracing.valid_request_id(_metadata(grpc_context, tracing.REQUEST_ID_KEY))
    return {
        tracing.REQUEST_ID_KEY: request_id
        or tracing.valid_request_id(serve_request_id())
        or tracing.new_request_id()
    }


def _metadata(grpc_context: Any, key: str) -> str | None:
    for name, value in grpc_context.invocation_metadata():
        if name.lower() == key:
            return str(value)
    return None
