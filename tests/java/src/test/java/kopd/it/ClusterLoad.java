package kopd.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;

/**
 * Continuous idempotent acks=all production for the cluster tests: one record per partition
 * every few milliseconds from a thread of its own, each value unique ("v-<seq>"), every
 * acknowledgement recorded with its partition, offset and time, so a test can check that
 * everything acknowledged is in the log exactly once and measure how long each partition went
 * without an acknowledgement.
 */
final class ClusterLoad implements AutoCloseable {
    /** One acknowledged record. */
    record Ack(int partition, long offset, long seq, long nanos) {}

    private final String topic;
    private final int partitions;
    private final KafkaProducer<byte[], byte[]> producer;
    private final Thread thread;
    private volatile boolean running = true;
    private final AtomicLong nextSeq = new AtomicLong();
    final List<Ack> acks = Collections.synchronizedList(new ArrayList<>());
    final List<Exception> failures = new CopyOnWriteArrayList<>();

    ClusterLoad(Properties producerProps, String topic, int partitions, long pauseMs) {
        this.topic = topic;
        this.partitions = partitions;
        this.producer = new KafkaProducer<>(producerProps);
        this.thread = new Thread(() -> {
            while (running) {
                for (int p = 0; p < partitions && running; p++) {
                    send(p, nextSeq.getAndIncrement());
                }
                try {
                    Thread.sleep(pauseMs);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }, "cluster-load");
        thread.setDaemon(true);
        thread.start();
    }

    private void send(int p, long seq) {
        byte[] value = ("v-" + seq).getBytes(StandardCharsets.UTF_8);
        producer.send(new ProducerRecord<>(topic, p, null, value), (md, e) -> {
            if (e != null) {
                failures.add(e);
            } else {
                acks.add(new Ack(md.partition(), md.offset(), seq, System.nanoTime()));
            }
        });
    }

    /** The sequence number the next record sent will carry. */
    long nextSeq() {
        return nextSeq.get();
    }

    /** Acknowledgements so far. */
    int acked() {
        return acks.size();
    }

    /** Waits until {@code n} more records than now are acknowledged (bounded). */
    void awaitMore(int n, Duration within) throws InterruptedException {
        int target = acked() + n;
        long deadline = System.nanoTime() + within.toNanos();
        while (acked() < target) {
            if (System.nanoTime() > deadline) {
                fail("only " + acked() + " of " + target + " acknowledgements within " + within
                        + "; failures: " + failures);
            }
            Thread.sleep(20);
        }
    }

    /** Stops sending, then waits for every record sent to be acknowledged or failed. */
    void finish() throws InterruptedException {
        running = false;
        thread.join(10_000);
        producer.flush();
    }

    /**
     * First acknowledgement, on each of {@code parts}, of a record sent at or after
     * {@code fromNanos} (a record with a sequence number of at least {@code fromSeq}, read then):
     * an answer to a request sent before then may arrive after it.
     */
    Map<Integer, Long> firstAckAfter(long fromNanos, long fromSeq, Iterable<Integer> parts) {
        Map<Integer, Long> first = new HashMap<>();
        synchronized (acks) {
            for (Ack a : acks) {
                if (a.nanos >= fromNanos && a.seq >= fromSeq) {
                    first.merge(a.partition, a.nanos, Math::min);
                }
            }
        }
        Map<Integer, Long> out = new HashMap<>();
        for (int p : parts) {
            if (first.containsKey(p)) {
                out.put(p, first.get(p));
            }
        }
        return out;
    }

    /** Per partition, the longest time without an acknowledgement within [from, to]. */
    Map<Integer, Long> longestGapMs(long fromNanos, long toNanos) {
        Map<Integer, List<Long>> times = new HashMap<>();
        synchronized (acks) {
            for (Ack a : acks) {
                if (a.nanos >= fromNanos && a.nanos <= toNanos) {
                    times.computeIfAbsent(a.partition, k -> new ArrayList<>()).add(a.nanos);
                }
            }
        }
        Map<Integer, Long> gaps = new HashMap<>();
        for (int p = 0; p < partitions; p++) {
            List<Long> t = times.getOrDefault(p, new ArrayList<>());
            Collections.sort(t);
            long prev = fromNanos;
            long worst = 0;
            for (long x : t) {
                worst = Math.max(worst, x - prev);
                prev = x;
            }
            worst = Math.max(worst, toNanos - prev);
            gaps.put(p, TimeUnit.NANOSECONDS.toMillis(worst));
        }
        return gaps;
    }

    /**
     * Reads every partition from the start to its end and checks that the log holds each
     * acknowledged record at its acknowledged offset, and no value twice (the idempotent
     * producer's retries after a failover must not duplicate). Returns the log's record count.
     */
    long verifyLog(Properties consumerProps) {
        Map<Integer, Map<Long, Long>> log = new HashMap<>();
        Map<Long, String> seen = new HashMap<>();
        long records = 0;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(consumerProps)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
            while (tps.stream().anyMatch(tp -> c.position(tp, Duration.ofSeconds(30)) < end.get(tp))) {
                if (System.nanoTime() > deadline) {
                    fail("could not read the log to its end " + end + " within 90 s");
                }
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    long seq = Long.parseLong(new String(r.value(), StandardCharsets.UTF_8).substring(2));
                    String where = r.partition() + "@" + r.offset();
                    String before = seen.put(seq, where);
                    if (before != null) {
                        fail("value v-" + seq + " is in the log twice: " + before + " and " + where);
                    }
                    log.computeIfAbsent(r.partition(), k -> new HashMap<>()).put(r.offset(), seq);
                    records++;
                }
            }
        }
        synchronized (acks) {
            for (Ack a : acks) {
                Long at = log.getOrDefault(a.partition, Map.of()).get(a.offset);
                assertEquals(Long.valueOf(a.seq), at,
                        "acknowledged v-" + a.seq + " at " + a.partition + "@" + a.offset + " is not there");
            }
            assertTrue(records >= acks.size());
        }
        return records;
    }

    @Override
    public void close() {
        running = false;
        try {
            thread.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        producer.close(Duration.ofSeconds(5));
    }
}
