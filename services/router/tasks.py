"""The Router's task routes (docs/tasks.md): the hub's task calls on /models/{model} for every
served task but conversation, and OpenAI's embeddings, transcriptions and speech. A mixin of the
servicer: each goes through the same checks, selection, failover, reservation and ledger record
as chat (_prepare, _open, _serve_unary); task_formats.py knows the shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING

import grpc
from google.api import httpbody_pb2
from switchboard.router.v1 import router_service_pb2 as router_pb

from services.common import task_formats
from services.common.errors import ApiError, invalid_argument, unavailable
from services.common.provider_api import Opened
from services.common.secrets import BinaryCarry
from services.common.task_formats import GENERATE, OPERATIONS, Answer, TaskInput
from services.common.tasks import SERVED_TASKS, Task

if TYPE_CHECKING:
    from services.router.servicer import Call

CHAT = "conversational"
DEFAULT_HUB_TASK = "text-to-image"  # what /models/{model} served before it served every task
PIPELINE = "/pipeline/"  # hf-inference's /models/<id>/pipeline/<task> names the task
# The most audio one speech answer may stream: far past the longest input's speech in any format
# (4,096 characters, ~5 minutes: ~115 MB even as 48 kHz stereo 32-bit PCM); a provider that
# streams without end is cut there.
MAX_AUDIO_BYTES = 128 * 2**20


def _task(name: str) -> Task:
    return SERVED_TASKS[name]


class TaskMethods:
    """The task RPCs; the servicer supplies _caller, _prepare, _open, _serve_unary and the rest."""

    async def _hub_task(self, request: router_pb.TextToImageRequest, context: grpc.aio.ServicerContext) -> str:
        """The task a hub call is for: the one its path names, else its model's mapping's (the one
        the body fits when the model has several). Leaves the hub (or provider) model id in request.model."""
        model, _, named = request.model.partition(PIPELINE)
        request.model = model
        if named:
            if named not in SERVED_TASKS or named == CHAT:
                raise invalid_argument("INVALID_REQUEST", f"task {named[:64]} has no hub task route", "model")
            return named
        mapped = [t for t in await self._mapped_tasks(model, request.provider, context) if t != CHAT]
        if not mapped:
            return DEFAULT_HUB_TASK
        return task_formats.choose_task(mapped, request.body.data, request.body.content_type)

    async def _mapped_tasks(self, model: str, provider: str, context: grpc.aio.ServicerContext) -> list[str]:
        """Every task the model (the provider's own model id, on the per-provider route) is mapped for."""
        caller, _ = await self._inference_caller(context)
        if provider:
            resolved = await self._provider_resolution(provider, model, caller.user, DEFAULT_HUB_TASK)
            return list(resolved.answer.tasks) if resolved else []  # no provider: the route's own lookup answers 404
        _, resolved = await self._resolution(model, None, caller.user, DEFAULT_HUB_TASK)
        return list(resolved.answer.tasks)

    async def _hub_call(
        self, task: str, request: router_pb.TextToImageRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        body = request.body

        def task_input() -> TaskInput:
            return task_formats.hub_input(_task(task), request.model, body.data, body.content_type)

        answer = await self._serve_task(task, request, context, task_input)
        return httpbody_pb2.HttpBody(content_type=answer.content_type, data=answer.data)

    async def _serve_task(
        self, task: str, request, context: grpc.aio.ServicerContext, task_input: Callable[[], TaskInput]
    ) -> Answer:
        """A unary task answer in the caller's shape, headed and billed once it is made."""
        with self._inference(OPERATIONS.get(task, GENERATE), context) as measure:
            call = await self._prepare(task, request, context, measure, task_input)
            opened = await self._open(call, "", False, context)
            answer = self._shaped(call, partial(self._rendered, call), opened)
            await self._serve_unary(call, opened, context)
            return answer

    @staticmethod
    def _rendered(call: Call, opened: Opened) -> Answer:
        """A task's answer in its caller's shape, billed in the task's unit."""
        call.bill = task_formats.served_bill(call.task_call, opened.result)
        route, result = opened.route, opened.result
        return task_formats.render(call.task_call, route, call.model, result, opened.content_type, call.bill)

    async def CreateEmbedding(
        self, request: router_pb.CreateEmbeddingRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        task = "feature-extraction"
        answer = await self._serve_task(
            task, request, context, lambda: task_formats.embeddings_input(_task(task), request.body.data)
        )
        return httpbody_pb2.HttpBody(content_type=answer.content_type, data=answer.data)

    async def CreateTranscription(
        self, request: router_pb.CreateTranscriptionRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        task, body = "automatic-speech-recognition", request.body
        answer = await self._serve_task(
            task, request, context, lambda: task_formats.transcription_input(_task(task), body.data, body.content_type)
        )
        return httpbody_pb2.HttpBody(content_type=answer.content_type, data=answer.data)

    async def CreateSpeech(
        self, request: router_pb.CreateSpeechRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        task = "text-to-speech"
        with self._inference(OPERATIONS.get(task, GENERATE), context) as measure:
            value = lambda: task_formats.speech_input(_task(task), request.body.data)  # noqa: E731
            call = await self._prepare(task, request, context, measure, value)
            opened = await self._open(call, "", True, context)
            call.bill = task_formats.served_bill(call.task_call, opened.result)
            if opened.response is None:  # a provider called in the hub's format answers whole
                audio = self._shaped(call, opened.route.provider.redactor.binary, opened.result)
                await self._serve_unary(call, opened, context)
                yield httpbody_pb2.HttpBody(content_type=opened.content_type, data=audio)
                return
            carry = BinaryCarry(opened.route.provider.redactor)
            try:  # a secret in the first bytes: refused before anything was served or billed
                first = self._shaped(call, carry.feed, opened.result)
            except ApiError:
                opened.response.release()
                raise
            await self._begin_stream(call, opened, context, measure)
            try:
                async for piece in self._audio(opened, carry, first):
                    yield httpbody_pb2.HttpBody(content_type=opened.content_type, data=piece)
            finally:
                self._finish(call, opened)

    async def _audio(self, opened: Opened, carry: BinaryCarry, first: bytes) -> AsyncIterator[bytes]:
        """The provider's audio as it arrives after its `first` bytes (those `carry` let pass),
        refused (502) when it carries a secret, cut (503) past MAX_AUDIO_BYTES; a stream that
        breaks ends the call with 503."""
        relayed = len(first)
        try:
            if first:
                yield first
            async for piece in opened.response.content.iter_any():
                relayed += len(piece)
                if relayed > MAX_AUDIO_BYTES:
                    raise ValueError(f"the audio passed {MAX_AUDIO_BYTES // 2**20} MiB")
                if passed := carry.feed(piece):
                    yield passed
            if rest := carry.end():
                yield rest
        except (OSError, TimeoutError, ValueError) as exc:
            self.upstreams.stream_broke(opened.route, exc)
            raise unavailable(
                "STREAM_INTERRUPTED", f"provider {opened.route.provider.id} broke off the audio stream"
            ) from None
        finally:
            opened.response.release()
