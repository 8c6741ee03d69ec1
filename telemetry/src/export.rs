//! The span queue in front of the OTLP exporter: bounded, never blocking the process, and
//! counting every span it does not deliver.
//!
//! The SDK's batch processor drops spans when its queue is full but keeps the count to itself;
//! this one counts them in [`dropped_spans`], which every process's `/metrics` serves as
//! `strata_spans_dropped_total`, so that a collector that is down or too slow shows on a
//! dashboard instead of as holes in the traces.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;

/// Spans ended but not delivered to the collector, since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DroppedSpans {
    /// Spans that found the queue full (the exporter could not keep up).
    pub queue_full: u64,
    /// Spans of batches the collector did not accept in time (unreachable, refused, slow).
    pub export_failed: u64,
}

static QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
static EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);

/// The spans this process dropped so far.
pub fn dropped_spans() -> DroppedSpans {
    DroppedSpans {
        queue_full: QUEUE_FULL.load(Ordering::Relaxed),
        export_failed: EXPORT_FAILED.load(Ordering::Relaxed),
    }
}

/// How the queue batches spans (the standard `OTEL_BSP_*` variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Spans waiting for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`); more are dropped.
    pub max_queue_size: usize,
    /// Spans per export call at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_export_batch_size: usize,
    /// How long a span may wait for a batch to fill (`OTEL_BSP_SCHEDULE_DELAY`, in ms).
    pub schedule_delay: Duration,
}

impl Default for QueueSettings {
    /// The specification's defaults.
    fn default() -> Self {
        QueueSettings {
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_secs(5),
        }
    }
}

/// What the export task is asked besides spans; each answers on its own channel.
enum Command {
    Flush(std::sync::mpsc::SyncSender<OTelSdkResult>),
    Shutdown(std::sync::mpsc::SyncSender<OTelSdkResult>),
}

/// A [`SpanProcessor`] queueing ended spans for an exporter task on `runtime`.
pub(crate) struct CountingBatchProcessor {
    spans: mpsc::Sender<SpanData>,
    commands: mpsc::UnboundedSender<Command>,
    /// How long flush and shutdown wait for the export task.
    patience: Duration,
}

impl fmt::Debug for CountingBatchProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingBatchProcessor").finish()
    }
}

impl CountingBatchProcessor {
    /// Starts the export task of `exporter` on `runtime`; each export may take `timeout`.
    pub(crate) fn start<E: SpanExporter + 'static>(
        exporter: E,
        settings: QueueSettings,
        timeout: Duration,
        runtime: &tokio::runtime::Handle,
    ) -> CountingBatchProcessor {
        let (spans, queued) = mpsc::channel(settings.max_queue_size.max(1));
        let (commands, received) = mpsc::unbounded_channel();
        let task = ExportTask {
            exporter,
            settings,
            timeout,
            batch: Vec::new(),
            warned: false,
        };
        runtime.spawn(task.run(queued, received));
        CountingBatchProcessor {
            spans,
            commands,
            // A flush exports at most a full queue, batch by batch.
            patience: timeout
                * u32::try_from(settings.max_queue_size / settings.max_export_batch_size.max(1))
                    .unwrap_or(u32::MAX)
                    .clamp(1, 8)
                + Duration::from_secs(1),
        }
    }

    /// Sends `command` and waits for its answer.
    fn ask(
        &self,
        command: impl FnOnce(std::sync::mpsc::SyncSender<OTelSdkResult>) -> Command,
    ) -> OTelSdkResult {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        if self.commands.send(command(answer)).is_err() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        match answered.recv_timeout(self.patience) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(OTelSdkError::Timeout(self.patience))
            }
            // The task ended between the send and the answer: it was shut down.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(OTelSdkError::AlreadyShutdown)
            }
        }
    }
}

impl SpanProcessor for CountingBatchProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.spans.try_send(span) {
            QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Command::Flush)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.ask(Command::Shutdown)
    }
}

/// The task that owns the exporter: collects spans into batches and exports each when it is
/// full, when the schedule delay has passed, or when asked to flush.
struct ExportTask<E> {
    exporter: E,
    settings: QueueSettings,
    timeout: Duration,
    batch: Vec<SpanData>,
    /// Whether a failed export was reported on standard error (once per process).
    warned: bool,
}

impl<E: SpanExporter> ExportTask<E> {
    async fn run(
        mut self,
        mut queued: mpsc::Receiver<SpanData>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut tick = tokio::time::interval(self.settings.schedule_delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                span = queued.recv() => match span {
                    Some(span) => {
                        self.batch.push(span);
                        if self.batch.len() >= self.settings.max_export_batch_size {
                            // A failure is counted in the export itself.
                            let _ = self.export().await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let _ = self.export().await;
                }
                command = commands.recv() => match command {
                    Some(Command::Flush(answer)) => {
                        let _ = answer.send(self.drain(&mut queued).await);
                    }
                    Some(Command::Shutdown(answer)) => {
                        let result = self.drain(&mut queued).await;
                        let result = result.and(self.exporter.shutdown_with_timeout(self.timeout));
                        let _ = answer.send(result);
                        break;
                    }
                    None => break,
                },
            }
        }
    }

    /// Exports everything queued so far.
    async fn drain(&mut self, queued: &mut mpsc::Receiver<SpanData>) -> OTelSdkResult {
        let mut result = Ok(());
        while let Ok(span) = queued.try_recv() {
            self.batch.push(span);
            if self.batch.len() >= self.settings.max_export_batch_size {
                result = result.and(self.export().await);
            }
        }
        result.and(self.export().await)
    }

    /// Exports the batch; its spans count as dropped when the collector does not take them.
    async fn export(&mut self) -> OTelSdkResult {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let spans = batch.len() as u64;
        let result = match tokio::time::timeout(self.timeout, self.exporter.export(batch)).await {
            Ok(result) => result,
            Err(_) => Err(OTelSdkError::Timeout(self.timeout)),
        };
        if let Err(err) = &result {
            EXPORT_FAILED.fetch_add(spans, Ordering::Relaxed);
            if !self.warned {
                self.warned = true;
                eprintln!(
                    "warning: spans not exported ({err}); further losses are counted in strata_spans_dropped_total"
                );
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
    use opentelemetry::{InstrumentationScope, trace::TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    /// An exporter that keeps what it receives, or fails every call.
    #[derive(Debug, Clone, Default)]
    struct Keeping {
        received: Arc<Mutex<Vec<String>>>,
        failing: bool,
        slow: Option<Duration>,
    }

    impl SpanExporter for Keeping {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if let Some(delay) = self.slow {
                tokio::time::sleep(delay).await;
            }
            if self.failing {
                return Err(OTelSdkError::InternalFailure("collector down".into()));
            }
            let mut received = self.received.lock().unwrap();
            received.extend(batch.into_iter().map(|span| span.name.into_owned()));
            Ok(())
        }
    }

    fn span(name: &str) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1),
                SpanId::from(2),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.to_string().into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    // The counters are process-wide: each test looks at what it added.
    #[test]
    fn spans_are_exported_in_batches_and_flushed_on_shutdown() {
        let runtime = runtime();
        let exporter = Keeping::default();
        let settings = QueueSettings {
            max_queue_size: 100,
            max_export_batch_size: 4,
            schedule_delay: Duration::from_secs(60),
        };
        let processor = CountingBatchProcessor::start(
            exporter.clone(),
            settings,
            Duration::from_secs(1),
            runtime.handle(),
        );
        for index in 0..10 {
            processor.on_end(span(&format!("span {index}")));
        }
        processor.force_flush().unwrap();
        assert_eq!(exporter.received.lock().unwrap().len(), 10);
        processor.on_end(span("last"));
        processor.shutdown().unwrap();
        let received = exporter.received.lock().unwrap();
        assert_eq!(received.len(), 11);
        assert_eq!(received.last().map(String::as_str), Some("last"));
        assert!(matches!(
            processor.force_flush(),
            Err(OTelSdkError::AlreadyShutdown)
        ));
    }

    #[test]
    fn a_full_queue_and_a_failing_collector_count_their_spans() {
        let runtime = runtime();
        let before = dropped_spans();
        let exporter = Keeping {
            failing: true,
            slow: Some(Duration::from_millis(300)),
            ..Keeping::default()
        };
        let settings = QueueSettings {
            max_queue_size: 3,
            max_export_batch_size: 1,
            schedule_delay: Duration::from_secs(60),
        };
        let processor = CountingBatchProcessor::start(
            exporter,
            settings,
            Duration::from_secs(1),
            runtime.handle(),
        );
        // The task takes the first span and sits in its slow export: 3 more fill the queue,
        // the rest find it full. Nothing here waits for the exporter.
        let started = std::time::Instant::now();
        for index in 0..20 {
            processor.on_end(span(&format!("span {index}")));
        }
        assert!(started.elapsed() < Duration::from_millis(250));
        // Whether shutdown itself reports a failure depends on which of the failed exports
        // it still had to make; every span is accounted for either way.
        let _ = processor.shutdown();
        let after = dropped_spans();
        let full = after.queue_full - before.queue_full;
        let failed = after.export_failed - before.export_failed;
        assert_eq!(full + failed, 20, "full {full}, failed {failed}");
        assert!(full >= 16, "full {full}");
    }
}
