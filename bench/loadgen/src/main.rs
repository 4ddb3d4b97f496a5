//! kopd-loadgen: a Kafka load generator on librdkafka (through rdkafka) with HdrHistogram.
//!
//! Producers send records whose first 8 bytes are the send time (ns since the Unix epoch); the
//! delivery report gives produce latency (send -> ack) and throughput (acks inside the window), tail consumers (assigned, no group) give
//! end-to-end latency (send -> consumed). Records sent during the warm-up are not measured.
//! The same client runs against any broker, so kopd and Kafka are measured alike.
//!
//!   kopd-loadgen --brokers 127.0.0.1:9092 --topic t --size 1024 --producers 1 --consumers 1 \
//!                --acks all --rate 0 --duration 10 --warmup 2 [--set key=value ...] [--json]
//!
//! `--drain N` instead reads the topic from the beginning until N records have arrived
//! (`--drain-threads` assigned consumers dealing the partitions, nothing printed per record) and
//! reports the rate: a consume measurement where the client is not the limit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Parser, Debug)]
#[command(about = "Kafka load generator (librdkafka + HdrHistogram)")]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic (must exist).
    #[arg(long, default_value = "loadgen")]
    topic: String,
    /// Record value size in bytes (at least 8).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Producer threads (one librdkafka producer each).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Tail consumer threads (0 = none); partitions are split among them.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// acks: all, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Target rate in records/s over all producers; 0 = unthrottled.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds (sent, not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    #[arg(long, default_value_t = 262144)]
    batch_size: u32,
    /// Producer queue bound (librdkafka queue.buffering.max.kbytes): backpressure when unthrottled.
    #[arg(long, default_value_t = 32768)]
    queue_kbytes: u32,
    /// Extra librdkafka property for producers and consumers, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Consume mode: read every partition from the beginning until this many records have
    /// arrived, then report records/s (no producers, no tail consumers).
    #[arg(long, default_value_t = 0)]
    drain: u64,
    /// Consume mode: give up after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    drain_timeout: f64,
    /// Consume mode: consumers (threads), the partitions dealt among them. One is enough on a
    /// 2-core machine (the client and the broker share the cores); more on bigger ones.
    #[arg(long, default_value_t = 1)]
    drain_threads: usize,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn new_hist() -> Histogram<u64> {
    // microseconds, 1 us .. 120 s, 3 significant digits
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

fn sent_at(payload: Option<&[u8]>) -> Option<u64> {
    let p = payload?;
    Some(u64::from_le_bytes(p.get(..8)?.try_into().ok()?))
}

struct Ctx {
    hist: Mutex<Histogram<u64>>,
    measure_from: u64,
    measure_to: u64,
    acked: AtomicU64,
    acked_total: AtomicU64,
    errors: AtomicU64,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => {
                let now = now_ns();
                self.acked_total.fetch_add(1, Ordering::Relaxed);
                // Throughput: acks that arrive inside the measured window.
                if now >= self.measure_from && now < self.measure_to {
                    self.acked.fetch_add(1, Ordering::Relaxed);
                }
                // Latency: records sent inside the window.
                if let Some(t) = sent_at(m.payload()) {
                    if t >= self.measure_from && t < self.measure_to {
                        self.hist.lock().unwrap().saturating_record(now.saturating_sub(t) / 1000);
                    }
                }
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn config(args: &Args) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.brokers);
    for kv in &args.set {
        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("--set {kv}: expected KEY=VALUE"));
        c.set(k, v);
    }
    c
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `--drain`: `--drain-threads` assigned consumers (each its own thread and connections, the
/// partitions dealt among them) read from the beginning until `n` records (and their value
/// bytes) have arrived in all. One consumer's polling thread tops out near 0.8M x 1 KiB
/// records/s; where the broker has cores to spare, more than one measures it better.
fn drain(args: &Args, n: u64) {
    let probe: BaseConsumer = config(args).create().expect("consumer");
    let md = probe.fetch_metadata(Some(&args.topic), Duration::from_secs(10)).expect("metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    assert!(!parts.is_empty(), "topic {} has no partitions (does it exist?)", args.topic);
    drop(probe);
    let threads = args.drain_threads.clamp(1, parts.len());
    let records = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(args.drain_timeout);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let mine: Vec<i32> = parts.iter().copied().skip(t).step_by(threads).collect();
            let (records, bytes) = (records.clone(), bytes.clone());
            let mut cfg = config(args);
            // librdkafka postpones a partition's next fetch by fetch.queue.backoff.ms (1 s by
            // default) once its local queue holds queued.min.messages: with small records that
            // pause, not either broker, set the drain's pace (100 B records: 0.2M records/s
            // against 0.95M with 1 ms, on kopd). The drain measures the broker.
            if !args.set.iter().any(|kv| kv.starts_with("fetch.queue.backoff.ms=")) {
                cfg.set("fetch.queue.backoff.ms", "1");
            }
            let c: BaseConsumer = cfg
                .set("group.id", "kopd-loadgen-drain")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .set("fetch.max.bytes", "52428800")
                .create()
                .expect("consumer");
            let topic = args.topic.clone();
            thread::spawn(move || {
                let mut tpl = TopicPartitionList::new();
                for p in mine {
                    tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
                }
                c.assign(&tpl).expect("assign");
                // Counted locally, published every 1,000 records: the total is checked there.
                let (mut r, mut b) = (0u64, 0u64);
                while records.load(Ordering::Relaxed) < n && Instant::now() < deadline {
                    match c.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            r += 1;
                            b += m.payload_len() as u64;
                            if r == 1000 {
                                records.fetch_add(r, Ordering::Relaxed);
                                bytes.fetch_add(b, Ordering::Relaxed);
                                (r, b) = (0, 0);
                            }
                        }
                        Some(Err(e)) => eprintln!("consumer: {e}"),
                        None => {
                            records.fetch_add(r, Ordering::Relaxed);
                            bytes.fetch_add(b, Ordering::Relaxed);
                            (r, b) = (0, 0);
                        }
                    }
                }
                records.fetch_add(r, Ordering::Relaxed);
                bytes.fetch_add(b, Ordering::Relaxed);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("drain thread");
    }
    let secs = t0.elapsed().as_secs_f64();
    let (records, bytes) = (records.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed));
    let (rec_s, mb_s) = (records as f64 / secs, bytes as f64 / secs / 1048576.0);
    if args.json {
        println!("{{\"records\":{records},\"bytes\":{bytes},\"secs\":{secs:.3},\"records_per_s\":{rec_s:.1},\"mb_per_s\":{mb_s:.2},\"threads\":{threads}}}");
    } else {
        println!("drain: {records} records, {bytes} value bytes in {secs:.2} s with {threads} consumers = {rec_s:.0} records/s, {mb_s:.1} MB/s");
    }
    if records < n {
        eprintln!("drain: only {records} of {n} records within {} s", args.drain_timeout);
        std::process::exit(1);
    }
}

fn main() {
    let args = Args::parse();
    if args.drain > 0 {
        drain(&args, args.drain);
        return;
    }
    assert!(args.size >= 8, "--size must be at least 8");
    let warm = Duration::from_secs_f64(args.warmup);
    let run = Duration::from_secs_f64(args.duration);
    let t0 = now_ns();
    let measure_from = t0 + warm.as_nanos() as u64;
    let measure_to = measure_from + run.as_nanos() as u64;
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));

    // Tail consumers first, so they are positioned at the end before anything is produced.
    let mut consumer_threads = Vec::new();
    if args.consumers > 0 {
        let probe: BaseConsumer = config(&args).create().expect("consumer");
        let md = probe.fetch_metadata(Some(&args.topic), Duration::from_secs(10)).expect("metadata");
        let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
        assert!(!parts.is_empty(), "topic {} has no partitions (does it exist?)", args.topic);
        for j in 0..args.consumers.min(parts.len()) {
            let mut tpl = TopicPartitionList::new();
            for p in parts.iter().filter(|p| (**p as usize) % args.consumers == j) {
                tpl.add_partition_offset(&args.topic, *p, Offset::End).unwrap();
            }
            let c: BaseConsumer = config(&args)
                .set("group.id", "kopd-loadgen")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .set("fetch.wait.max.ms", "100")
                .create()
                .expect("consumer");
            c.assign(&tpl).expect("assign");
            let (stop, consumed) = (stop_consumers.clone(), consumed.clone());
            consumer_threads.push(thread::spawn(move || {
                let mut h = new_hist();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match c.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            let now = now_ns();
                            consumed.fetch_add(1, Ordering::Relaxed);
                            if let Some(t) = sent_at(m.payload()) {
                                if t >= measure_from && t < measure_to {
                                    n += 1;
                                    h.saturating_record(now.saturating_sub(t) / 1000);
                                }
                            }
                        }
                        Some(Err(e)) => eprintln!("consumer: {e}"),
                        None => {}
                    }
                }
                (h, n)
            }));
        }
        // Let the assignments resolve their end offsets (bounded).
        thread::sleep(Duration::from_millis(500));
    }

    let ctx = Arc::new(Mutex::new(Vec::new()));
    let mut producer_threads = Vec::new();
    // The warm-up counts from the start (it includes the consumers' setup); senders stop when the
    // measured window ends.
    let end = Instant::now() + Duration::from_nanos(measure_to.saturating_sub(now_ns()));
    for _ in 0..args.producers {
        let cfg = {
            let mut c = config(&args);
            c.set("acks", &args.acks)
                .set("linger.ms", args.linger_ms.to_string())
                .set("batch.size", args.batch_size.to_string())
                .set("queue.buffering.max.kbytes", args.queue_kbytes.to_string())
                .set("message.timeout.ms", "60000");
            c
        };
        let producer: ThreadedProducer<Ctx> = cfg
            .create_with_context(Ctx {
                hist: Mutex::new(new_hist()),
                measure_from,
                measure_to,
                acked: AtomicU64::new(0),
                acked_total: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            })
            .expect("producer");
        let producer = Arc::new(producer);
        ctx.lock().unwrap().push(producer.clone());
        let (topic, size, per_thread) = (args.topic.clone(), args.size, args.rate as f64 / args.producers as f64);
        producer_threads.push(thread::spawn(move || {
            let mut buf = vec![0x5au8; size];
            let start = Instant::now();
            let mut sent = 0u64;
            while Instant::now() < end {
                if per_thread > 0.0 {
                    let due = start + Duration::from_secs_f64(sent as f64 / per_thread);
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                }
                buf[..8].copy_from_slice(&now_ns().to_le_bytes());
                loop {
                    match producer.send::<(), _>(BaseRecord::to(&topic).payload(&buf[..])) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            thread::sleep(Duration::from_micros(200));
                            if Instant::now() >= end {
                                return sent;
                            }
                        }
                        Err((e, _)) => panic!("send: {e}"),
                    }
                }
                sent += 1;
            }
            sent
        }));
    }
    let sent: u64 = producer_threads.into_iter().map(|t| t.join().unwrap()).sum();
    let producers = ctx.lock().unwrap().clone();
    for p in &producers {
        let _ = p.flush(Duration::from_secs(60));
    }
    let mut ph = new_hist();
    let (mut acked, mut acked_total, mut errors) = (0, 0, 0);
    for p in &producers {
        let c = p.context();
        ph.add(&*c.hist.lock().unwrap()).unwrap();
        acked += c.acked.load(Ordering::Relaxed);
        acked_total += c.acked_total.load(Ordering::Relaxed);
        errors += c.errors.load(Ordering::Relaxed);
    }
    // Consumers: until they have seen every acked record, at most 10 s more.
    let drain_until = Instant::now() + Duration::from_secs(10);
    while !consumer_threads.is_empty() && consumed.load(Ordering::Relaxed) < acked_total && Instant::now() < drain_until
    {
        thread::sleep(Duration::from_millis(20));
    }
    stop_consumers.store(true, Ordering::Relaxed);
    let mut eh = new_hist();
    let mut e2e_n = 0;
    for t in consumer_threads {
        let (h, n) = t.join().unwrap();
        eh.add(&h).unwrap();
        e2e_n += n;
    }

    let secs = run.as_secs_f64();
    let rec_s = acked as f64 / secs;
    let mb_s = rec_s * args.size as f64 / 1048576.0;
    let qs = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)];
    if args.json {
        let lat = |h: &Histogram<u64>| {
            let mut s = qs.iter().map(|(n, q)| format!("\"{n}\":{:.3}", pct(h, *q))).collect::<Vec<_>>();
            s.push(format!("\"max\":{:.3}", h.max() as f64 / 1000.0));
            s.push(format!("\"mean\":{:.3}", h.mean() / 1000.0));
            format!("{{{}}}", s.join(","))
        };
        println!(
            "{{\"sent\":{sent},\"acked\":{acked},\"errors\":{errors},\"consumed\":{},\"records_per_s\":{rec_s:.1},\
             \"mb_per_s\":{mb_s:.2},\"produce_ms\":{},\"e2e_ms\":{},\"e2e_records\":{e2e_n}}}",
            consumed.load(Ordering::Relaxed),
            lat(&ph),
            lat(&eh)
        );
    } else {
        println!(
            "produce: {acked} records acked in {secs:.1} s = {rec_s:.0} records/s, {mb_s:.1} MB/s \
             (sent {sent}, errors {errors})"
        );
        let line = |name: &str, h: &Histogram<u64>| {
            let s: Vec<String> = qs.iter().map(|(n, q)| format!("{n} {:.3}", pct(h, *q))).collect();
            println!("{name} latency ms: {}, max {:.3} ({} samples)", s.join(", "), h.max() as f64 / 1000.0, h.len());
        };
        line("produce (send->ack)", &ph);
        if args.consumers > 0 {
            line("end-to-end (send->consume)", &eh);
        }
    }
    if errors > 0 {
        std::process::exit(1);
    }
}
