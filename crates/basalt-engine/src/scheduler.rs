//! Continuous batching over one llama.cpp context.
//!
//! Every step decodes one token for each running sequence plus a bounded chunk
//! of prompt for sequences still in prefill, in a single `llama_decode`. New
//! requests join between steps and finished ones leave, so a long generation
//! never holds the model, and the prefill chunk is small while others decode
//! so their inter-token latency stays bounded. Each sequence has its own
//! sampler, so requests with different settings share a batch.
//!
//! The KV cache is unified: a new sequence copies the cells of the longest
//! prefix it shares with a kept prefix or a running sequence (a cell copy
//! shares memory, it moves nothing), and prefills only the rest. Finished
//! sequences stay behind as automatic prefixes; explicit cache points are
//! copied out into their own sequences once prefilled.
//!
//! Reserved lanes (provisioned throughput) hold decode slots and their share of
//! the KV cache that shared requests cannot take (`reservation`); their waiting
//! requests are admitted first and their prompts prefilled first.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use basalt_grammar::Matcher;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::prefix_cache::PrefixCache;
use crate::reservation::{self, Lane, Occupancy, Pool, Reservations};
use crate::sampling::Sampler;
use crate::stop::{Scan, StopMatcher};
use crate::text::{
    backend, GenerateRequest, GenerationEvent, GenerationSummary, StopReason, TextModelConfig,
    Vocabulary,
};

/// A request on its way to the worker.
pub(crate) struct Job {
    pub tokens: Vec<LlamaToken>,
    /// Token counts of explicitly cacheable prefixes, ascending.
    pub cache_points: Vec<usize>,
    pub request: GenerateRequest,
    pub admitted: Instant,
    pub events: mpsc::UnboundedSender<GenerationEvent>,
    /// Held while the job waits; handed back when it starts decoding or is dropped.
    pub ticket: Option<QueueTicket>,
}

/// One place in a bounded waiting line, given back on drop.
pub(crate) struct QueueTicket(Arc<AtomicUsize>);

impl QueueTicket {
    /// A place in the line `waiting` counts, unless `limit` already wait.
    pub fn take(waiting: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(Arc::clone(waiting)))
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Prompt tokens per step when no sequence is decoding.
const PREFILL_BATCH: usize = 512;
/// Prompt tokens per step while others decode: bounds their inter-token latency
/// (about a third of a second of prefill on two cores).
const PREFILL_SHARE: usize = 128;
/// Tokens kept in reserve beyond a grammar's shortest completion before it is forced.
const COMPLETION_MARGIN: usize = 2;
/// Most sequences one batch decodes.
pub(crate) const MAX_SLOTS: usize = 64;
/// Kept prefixes, each in a sequence id of its own.
const MAX_KEPT_PREFIXES: usize = 24;

/// Sizes the worker runs with, derived from the config and the model.
pub(crate) struct Limits {
    context_window: u32,
    threads: i32,
    slots: usize,
    kv_cells: u32,
    cache_tokens: usize,
}

impl Limits {
    pub fn new(config: &TextModelConfig, context_window: u32, model: &LlamaModel) -> Self {
        let kv_cells = config.kv_cache_tokens.max(context_window);
        // f16 K and V for every layer's KV heads.
        let head_dim = (model.n_embd() as u64 / u64::from(model.n_head().max(1))).max(1);
        let bytes_per_token =
            (u64::from(model.n_layer()) * 2 * u64::from(model.n_head_kv()) * head_dim * 2).max(1);
        let cache_tokens =
            (config.prompt_cache_bytes / bytes_per_token).min(u64::from(kv_cells / 2)) as usize;
        Self {
            context_window,
            threads: config.threads.max(1),
            slots: config.batch_slots.clamp(1, MAX_SLOTS),
            kv_cells,
            cache_tokens,
        }
    }

    fn sequence_ids(&self) -> usize {
        self.slots + MAX_KEPT_PREFIXES
    }

    pub fn slots(&self) -> usize {
        self.slots
    }
}

/// Constrained decoding state of one sequence.
struct Guide {
    grammar: basalt_grammar::Grammar,
    /// Set once the grammar applies.
    matcher: Option<Matcher>,
    trigger: Option<String>,
    /// Detokenises constrained output (only UTF-8 boundaries matter there).
    utf8: StopMatcher,
}

/// One sequence in the batch.
struct Running {
    seq: i32,
    job: Job,
    /// The slots it occupies: shared, or its reservation's.
    pool: Pool,
    sampler: Sampler,
    text: StopMatcher,
    guide: Option<Guide>,
    /// Prompt tokens whose KV state is in place.
    fed: usize,
    /// Every token in this sequence's KV cells, in order.
    history: Vec<i32>,
    /// Sampled, to be decoded next step.
    next: Option<LlamaToken>,
    /// Batch index of this sequence's logits after the current step.
    logits_at: Option<i32>,
    /// KV cells this sequence may grow to.
    reserved: usize,
    output_tokens: u32,
    first_token_ms: Option<u64>,
    cache_read: u32,
    cache_write: u32,
    /// Explicit cache points to copy out once prefilled.
    points_pending: Vec<usize>,
    /// The client went away.
    abandoned: bool,
}

impl Running {
    fn emit(&mut self, text: String) {
        if !text.is_empty() && self.job.events.send(GenerationEvent::Text(text)).is_err() {
            self.abandoned = true;
        }
    }
}

enum Step {
    Continue,
    Finish(StopReason),
}

struct Scheduler<'m> {
    model: &'m LlamaModel,
    vocabulary: Arc<Vocabulary>,
    limits: Limits,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    running: Vec<Running>,
    waiting: VecDeque<Job>,
    cache: PrefixCache,
    free_seqs: Vec<i32>,
    reservations: Arc<Reservations>,
}

/// What the worker is doing, published after every step for monitoring.
#[derive(Default)]
pub(crate) struct LoadGauges {
    pub running: AtomicUsize,
    pub slots: AtomicUsize,
    pub kv_cells_used: AtomicUsize,
    pub kv_cells_total: AtomicUsize,
    pub kept_prefix_tokens: AtomicUsize,
}

/// The worker thread: loads a context and schedules jobs until the queue closes.
pub(crate) fn run(
    model: Arc<LlamaModel>,
    vocabulary: Arc<Vocabulary>,
    limits: Limits,
    reservations: Arc<Reservations>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    gauges: Arc<LoadGauges>,
) {
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let batch_tokens = PREFILL_BATCH + limits.slots;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(limits.kv_cells))
        .with_n_batch(batch_tokens as u32)
        .with_n_ubatch(batch_tokens as u32)
        .with_n_seq_max(limits.sequence_ids() as u32)
        .with_kv_unified(true)
        .with_n_threads(limits.threads)
        .with_n_threads_batch(limits.threads);
    let ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    gauges.slots.store(limits.slots, Ordering::Relaxed);
    gauges
        .kv_cells_total
        .store(limits.kv_cells as usize, Ordering::Relaxed);
    let mut scheduler = Scheduler {
        model: &model,
        vocabulary,
        cache: PrefixCache::new(limits.cache_tokens),
        free_seqs: (0..limits.sequence_ids() as i32).rev().collect(),
        limits,
        ctx,
        batch: LlamaBatch::new(batch_tokens, 1),
        running: Vec::new(),
        waiting: VecDeque::new(),
        reservations,
    };
    loop {
        if scheduler.running.is_empty() && scheduler.waiting.is_empty() {
            match jobs.blocking_recv() {
                Some(job) => scheduler.waiting.push_back(job),
                None => return,
            }
        }
        // Everything queued is taken, so reserved requests behind shared ones are seen;
        // the waiting lines stay bounded by their tickets.
        while let Ok(job) = jobs.try_recv() {
            scheduler.waiting.push_back(job);
        }
        scheduler.admit_waiting();
        // Published before the step too: an admitted sequence's first token must not
        // reach its client while the gauges still say it is not running.
        scheduler.publish(&gauges);
        if let Err(e) = scheduler.step() {
            scheduler.fail_all(&e);
        }
        scheduler.publish(&gauges);
    }
}

impl Scheduler<'_> {
    fn publish(&self, gauges: &LoadGauges) {
        let kept = self.cache.tokens();
        let live: usize = self.running.iter().map(|r| r.history.len()).sum();
        gauges.running.store(self.running.len(), Ordering::Relaxed);
        gauges.kv_cells_used.store(live + kept, Ordering::Relaxed);
        gauges.kept_prefix_tokens.store(kept, Ordering::Relaxed);
    }

    fn reserved(&self) -> usize {
        self.running.iter().map(|r| r.reserved).sum::<usize>() + self.cache.tokens()
    }

    fn occupancy(&self) -> Occupancy {
        let mut occupancy = Occupancy::default();
        for r in &self.running {
            occupancy.add(&r.pool, r.reserved);
        }
        occupancy
    }

    /// Starts waiting jobs while slots and KV cells allow: reserved lanes first, then
    /// shared, each lane in arrival order (a lane whose first job cannot start yet
    /// starts none behind it, so a long request is not starved by short ones).
    fn admit_waiting(&mut self) {
        self.waiting.retain(|job| !job.events.is_closed());
        // Nothing to admit: no need to read the reservation table on this step.
        if self.waiting.is_empty() {
            return;
        }
        let table = self.reservations.snapshot();
        let as_shared = |lane: &Lane| match lane {
            Lane::Reserved(name) => !table.contains_key(name),
            Lane::Shared => true,
        };
        let shared_waiting = self.waiting.iter().any(|j| as_shared(&j.request.lane));
        let mut blocked: BTreeSet<Option<Arc<str>>> = BTreeSet::new();
        for reserved_pass in [true, false] {
            let mut index = 0;
            while index < self.waiting.len() && self.running.len() < self.limits.slots {
                let lane = self.waiting[index].request.lane.clone();
                let key = match &lane {
                    Lane::Reserved(name) if !as_shared(&lane) => Some(Arc::clone(name)),
                    _ => None,
                };
                if key.is_some() != reserved_pass || blocked.contains(&key) {
                    index += 1;
                    continue;
                }
                let need = self.cells_needed(&self.waiting[index]);
                let placed = self.place(&lane, &table, need, shared_waiting);
                match placed {
                    Some(pool) => {
                        if let Some(job) = self.waiting.remove(index) {
                            self.admit(job, need, pool);
                        }
                    }
                    None => {
                        blocked.insert(key);
                        index += 1;
                    }
                }
            }
        }
    }

    /// KV cells a job may grow to: its prompt and as many new tokens as it may make.
    fn cells_needed(&self, job: &Job) -> usize {
        let window = self.limits.context_window as usize;
        job.tokens.len() + (job.request.max_tokens as usize).min(window - job.tokens.len())
    }

    /// The pool a job on `lane` needing `need` cells starts in now, evicting kept
    /// prefixes to make room; `None` when it must wait.
    fn place(
        &mut self,
        lane: &Lane,
        table: &BTreeMap<Arc<str>, usize>,
        need: usize,
        shared_waiting: bool,
    ) -> Option<Pool> {
        let occupancy = self.occupancy();
        let slots = self.limits.slots;
        let kv_cells = self.limits.kv_cells as usize;
        let pool = reservation::place(lane, table, slots, &occupancy, shared_waiting)?;
        let protected = if reservation::may_borrow(&pool, need, table, slots, kv_cells, &occupancy)
        {
            0
        } else {
            reservation::protected_cells(&pool, table, slots, kv_cells, &occupancy)
        };
        let limit = kv_cells.saturating_sub(protected);
        // Kept prefixes give way to running work.
        while self.reserved() + need > limit {
            match self.cache.evict_lru() {
                Some(seq) => self.free_seq(seq),
                None => break,
            }
        }
        (self.reserved() + need <= limit).then_some(pool)
    }

    fn admit(&mut self, mut job: Job, reserved: usize, pool: Pool) {
        // Decoding from here on: its place in the waiting line is free.
        job.ticket = None;
        let Some(seq) = self.take_seq() else {
            let _ = job
                .events
                .send(GenerationEvent::Failed(EngineError::Inference(
                    "no free sequence slot".into(),
                )));
            return;
        };
        let prompt: Vec<i32> = job.tokens.iter().map(|t| t.0).collect();
        // Explicit cache hit: the longest cache point already kept.
        let cache_read = job
            .cache_points
            .iter()
            .rev()
            .find(|&&p| self.cache.has_explicit(&prompt[..p]))
            .copied()
            .unwrap_or(0);
        // The longest shared prefix among kept prefixes and running sequences; at least
        // one prompt token is always prefilled (it yields the first logits).
        let usable = prompt.len() - 1;
        let mut reuse = self
            .cache
            .longest_match(&prompt)
            .map(|r| (r.seq, r.tokens.min(usable)));
        for r in &self.running {
            let n = r
                .history
                .iter()
                .zip(&prompt)
                .take_while(|(a, b)| a == b)
                .count()
                .min(usable);
            if n > reuse.map_or(0, |(_, m)| m) {
                reuse = Some((r.seq, n));
            }
        }
        let mut fed = 0;
        if let Some((source, n)) = reuse {
            if self
                .ctx
                .copy_kv_cache_seq(source, seq, Some(0), Some(n as u32))
                .is_ok()
            {
                fed = n;
            }
        }
        let mut sampler = Sampler::new(job.request.sampling.clone());
        let window_start = prompt
            .len()
            .saturating_sub(job.request.sampling.repeat_window);
        for &t in &prompt[window_start..] {
            sampler.observe(t as u32);
        }
        let guide = job.request.constraint.as_ref().map(|c| Guide {
            grammar: c.grammar.clone(),
            matcher: c.trigger.is_none().then(|| c.grammar.matcher()),
            trigger: c.trigger.clone(),
            utf8: StopMatcher::new(Vec::new()),
        });
        let mut stops = job.request.stop_sequences.clone();
        if let Some(trigger) = guide.as_ref().and_then(|g| g.trigger.clone()) {
            stops.push(trigger);
        }
        let points_pending = job
            .cache_points
            .iter()
            .copied()
            .filter(|&p| p > cache_read)
            .collect();
        self.running.push(Running {
            seq,
            pool,
            sampler,
            text: StopMatcher::new(stops),
            guide,
            fed,
            history: prompt[..fed].to_vec(),
            next: None,
            logits_at: None,
            reserved,
            output_tokens: 0,
            first_token_ms: None,
            cache_read: cache_read as u32,
            cache_write: 0,
            points_pending,
            abandoned: false,
            job,
        });
    }

    fn take_seq(&mut self) -> Option<i32> {
        if self.free_seqs.is_empty() {
            let seq = self.cache.evict_lru()?;
            self.free_seq(seq);
        }
        self.free_seqs.pop()
    }

    fn free_seq(&mut self, seq: i32) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
        self.free_seqs.push(seq);
    }

    /// One decode over every running sequence.
    fn step(&mut self) -> Result<(), String> {
        self.batch.clear();
        let mut decoding = 0;
        for r in &mut self.running {
            r.logits_at = None;
            if let Some(token) = r.next.take() {
                let pos = r.history.len() as i32;
                r.logits_at = Some(self.batch.n_tokens());
                self.batch
                    .add(token, pos, &[r.seq], true)
                    .map_err(|e| e.to_string())?;
                r.history.push(token.0);
                decoding += 1;
            }
        }
        let mut budget = if decoding > 0 {
            PREFILL_SHARE
        } else {
            PREFILL_BATCH
        };
        // Reserved sequences' prompts go first, so their first token does not wait
        // behind shared prefill.
        let mut order: Vec<usize> = (0..self.running.len()).collect();
        order.sort_by_key(|&i| self.running[i].pool == Pool::Shared);
        for i in order {
            let r = &mut self.running[i];
            let remaining = r.job.tokens.len() - r.fed;
            if remaining == 0 || budget == 0 {
                continue;
            }
            let n = remaining.min(budget);
            for i in r.fed..r.fed + n {
                let last = i + 1 == r.job.tokens.len();
                if last {
                    r.logits_at = Some(self.batch.n_tokens());
                }
                self.batch
                    .add(r.job.tokens[i], i as i32, &[r.seq], last)
                    .map_err(|e| e.to_string())?;
                r.history.push(r.job.tokens[i].0);
            }
            r.fed += n;
            budget -= n;
        }
        if self.batch.n_tokens() == 0 {
            return Ok(());
        }
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| e.to_string())?;
        self.keep_cache_points();

        let mut finished = Vec::new();
        for index in 0..self.running.len() {
            let outcome = match self.running[index].logits_at {
                Some(at) => {
                    let logits = self.ctx.get_logits_ith(at);
                    next_token(
                        &mut self.running[index],
                        logits,
                        self.model,
                        &self.vocabulary,
                        self.limits.context_window,
                    )
                }
                None => Step::Continue,
            };
            let r = &self.running[index];
            match outcome {
                _ if r.abandoned || r.job.events.is_closed() => finished.push((index, None)),
                Step::Finish(reason) => finished.push((index, Some(reason))),
                Step::Continue => {}
            }
        }
        for (index, reason) in finished.into_iter().rev() {
            let r = self.running.remove(index);
            self.finish(r, reason);
        }
        Ok(())
    }

    /// Copies each explicit cache point that is now prefilled into a kept prefix.
    fn keep_cache_points(&mut self) {
        for index in 0..self.running.len() {
            while let Some(&point) = self.running[index].points_pending.first() {
                if point > self.running[index].fed {
                    break;
                }
                self.running[index].points_pending.remove(0);
                if self.cache.len() >= MAX_KEPT_PREFIXES {
                    if let Some(seq) = self.cache.evict_lru() {
                        self.free_seq(seq);
                    }
                }
                let Some(target) = self.take_seq() else {
                    continue;
                };
                let source = self.running[index].seq;
                if self
                    .ctx
                    .copy_kv_cache_seq(source, target, Some(0), Some(point as u32))
                    .is_err()
                {
                    self.free_seq(target);
                    continue;
                }
                let prefix = self.running[index].history[..point].to_vec();
                let freed = self.cache.insert(target, prefix, true);
                // A prefix over the cache budget is handed straight back: nothing was written.
                let kept = !freed.contains(&target);
                for seq in freed {
                    self.free_seq(seq);
                }
                if kept {
                    let r = &mut self.running[index];
                    r.cache_write = point as u32 - r.cache_read;
                }
            }
        }
    }

    /// Sends the summary (unless the client left) and keeps the sequence's KV state as
    /// an automatic prefix.
    fn finish(&mut self, mut r: Running, reason: Option<StopReason>) {
        if let Some(reason) = reason {
            if !matches!(reason, StopReason::StopSequence(_)) {
                let rest = r.text.finish();
                r.emit(rest);
            }
            if let Some(guide) = r.guide.as_mut() {
                let rest = guide.utf8.finish();
                r.emit(rest);
            }
            let _ = r
                .job
                .events
                .send(GenerationEvent::Finished(GenerationSummary {
                    stop_reason: reason,
                    input_tokens: r.job.tokens.len() as u32,
                    output_tokens: r.output_tokens,
                    cache_read_tokens: r.cache_read,
                    cache_write_tokens: r.cache_write,
                    first_token_ms: r.first_token_ms.unwrap_or(0),
                    total_ms: r.job.admitted.elapsed().as_millis() as u64,
                }));
        }
        if self.cache.len() >= MAX_KEPT_PREFIXES {
            if let Some(seq) = self.cache.evict_lru() {
                self.free_seq(seq);
            }
        }
        // Partially prefilled sequences have a valid prefix too.
        for seq in self.cache.insert(r.seq, r.history, false) {
            self.free_seq(seq);
        }
    }

    fn fail_all(&mut self, reason: &str) {
        for r in std::mem::take(&mut self.running) {
            let _ = r
                .job
                .events
                .send(GenerationEvent::Failed(EngineError::Inference(
                    reason.to_string(),
                )));
            self.free_seq(r.seq);
        }
    }
}

/// Samples one token for a sequence whose logits are ready, emits its text, and decides
/// whether the sequence goes on.
fn next_token(
    r: &mut Running,
    logits: &[f32],
    model: &LlamaModel,
    vocabulary: &Vocabulary,
    context_window: u32,
) -> Step {
    if r.first_token_ms.is_none() {
        r.first_token_ms = Some(r.job.admitted.elapsed().as_millis() as u64);
        // Cache points up to the prompt's end were kept before these logits were read.
        let prefilled = GenerationEvent::Prefilled {
            cache_read_tokens: r.cache_read,
            cache_write_tokens: r.cache_write,
        };
        if r.job.events.send(prefilled).is_err() {
            r.abandoned = true;
        }
    }
    let vocab = model.vocab();
    let max_tokens = r.job.request.max_tokens;
    let room = (max_tokens.saturating_sub(r.output_tokens) as usize)
        .min((context_window as usize).saturating_sub(r.history.len() + 1));

    if let Some(matcher) = r.guide.as_mut().and_then(|g| g.matcher.as_mut()) {
        // Close the grammar while there is still room for it, so the output always parses.
        // One sampled token can lengthen the completion, hence the margin. A token holds
        // at least one byte, so the tokenizer runs only once the bytes come close.
        let completion = matcher.shortest_completion_bytes();
        let out_of_room = completion.len() + COMPLETION_MARGIN >= room
            && vocab.tokenize(&completion, false, false).len() + COMPLETION_MARGIN >= room;
        let token = if out_of_room {
            None
        } else {
            let eog_ok = matcher.is_complete();
            let view = &*matcher;
            r.sampler.sample_allowed(
                logits,
                |t| {
                    let token = LlamaToken(t as i32);
                    if vocab.is_eog(token) {
                        return eog_ok;
                    }
                    let bytes = &vocabulary.bytes[t as usize];
                    !bytes.is_empty() && view.accepts(bytes)
                },
                || {
                    let mut allowed = Vec::new();
                    vocabulary.trie().allowed(view, &mut allowed);
                    if eog_ok {
                        allowed.push(vocab.eos().0 as u32);
                    }
                    allowed
                },
            )
        };
        let Some(token) = token else {
            return force_completion(r, model);
        };
        if vocab.is_eog(LlamaToken(token as i32)) {
            return Step::Finish(StopReason::GrammarComplete);
        }
        let bytes = &vocabulary.bytes[token as usize];
        matcher.advance(bytes);
        let finished = matcher.is_finished();
        r.output_tokens += 1;
        r.sampler.observe(token);
        guided_emit(r, bytes);
        if finished {
            return Step::Finish(StopReason::GrammarComplete);
        }
        r.next = Some(LlamaToken(token as i32));
        return Step::Continue;
    }

    let token = LlamaToken(r.sampler.sample(logits) as i32);
    if vocab.is_eog(token) {
        return Step::Finish(StopReason::EndOfTurn);
    }
    r.output_tokens += 1;
    r.sampler.observe(token.0 as u32);
    let bytes = &vocabulary.bytes[token.0 as usize];
    match r.text.push(bytes) {
        Scan::Continue(text) => r.emit(text),
        Scan::Stopped { text, sequence } => {
            r.emit(text);
            let Some(guide) = r
                .guide
                .as_mut()
                .filter(|g| g.trigger.as_deref() == Some(sequence.as_str()))
            else {
                return Step::Finish(StopReason::StopSequence(sequence));
            };
            // The model opened a tool call: the grammar takes over from here. Bytes of
            // this token past the trigger are dropped (the grammar decides what follows).
            let mut matcher = guide.grammar.matcher();
            matcher.advance(sequence.as_bytes());
            guide.matcher = Some(matcher);
            r.emit(sequence);
            if r.output_tokens >= max_tokens || r.history.len() + 1 >= context_window as usize {
                return force_completion(r, model);
            }
        }
    }
    if r.output_tokens >= max_tokens {
        return Step::Finish(StopReason::MaxTokens);
    }
    if r.history.len() + 1 >= context_window as usize {
        return Step::Finish(StopReason::ContextWindow);
    }
    r.next = Some(token);
    Step::Continue
}

/// Emits constrained output, which may end inside a UTF-8 character.
fn guided_emit(r: &mut Running, bytes: &[u8]) {
    if let Some(Scan::Continue(text)) = r.guide.as_mut().map(|g| g.utf8.push(bytes)) {
        r.emit(text);
    }
}

/// Out of room: appends the shortest text that completes the grammar, so the output
/// still parses, and ends the sequence.
fn force_completion(r: &mut Running, model: &LlamaModel) -> Step {
    let Some(matcher) = r.guide.as_mut().and_then(|g| g.matcher.as_mut()) else {
        return Step::Finish(StopReason::MaxTokens);
    };
    let completion = matcher.shortest_completion_bytes();
    matcher.advance(&completion);
    let forced = model.vocab().tokenize(&completion, false, false).len();
    r.output_tokens += forced as u32;
    guided_emit(r, &completion);
    Step::Finish(StopReason::GrammarComplete)
}
