package kopd.it;

import static kopd.it.Util.get;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Consumers join and leave a group while a producer writes: every record is consumed at least
 * once, no partition has two owners in one generation, and after the last commit the lag is 0.
 */
class GroupChurnTest {
    static final String TOPIC = "churn";
    static final String GROUP = "churners";
    static final int PARTITIONS = 12;
    static final int RECORDS = 3000;

    @TempDir
    Path dataDir;

    /** (generation -> partition -> owner) as the members reported their assignments. */
    final Map<Integer, Map<TopicPartition, String>> owners = new ConcurrentHashMap<>();
    final AtomicReference<String> conflict = new AtomicReference<>();
    final Set<String> seen = ConcurrentHashMap.newKeySet();

    final class Member implements Runnable {
        final String name;
        final AtomicBoolean stop = new AtomicBoolean();
        final Thread thread;
        final Properties props;
        volatile Throwable error;

        Member(Kopd kopd, String name) {
            this.name = name;
            props = kopd.consumerProps();
            props.put(ConsumerConfig.GROUP_ID_CONFIG, GROUP);
            props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            props.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, RangeAssignor.class.getName());
            props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
            props.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
            thread = new Thread(this, name);
            thread.start();
        }

        @Override
        public void run() {
            try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
                c.subscribe(List.of(TOPIC), new ConsumerRebalanceListener() {
                    @Override
                    public void onPartitionsRevoked(Collection<TopicPartition> partitions) {}

                    @Override
                    public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                        int gen = c.groupMetadata().generationId();
                        Map<TopicPartition, String> byGen = owners.computeIfAbsent(gen, g -> new ConcurrentHashMap<>());
                        for (TopicPartition tp : partitions) {
                            String prev = byGen.putIfAbsent(tp, name);
                            if (prev != null && !prev.equals(name)) {
                                conflict.set(tp + " owned by " + prev + " and " + name + " in generation " + gen);
                            }
                        }
                    }
                });
                while (!stop.get()) {
                    for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                        seen.add(new String(r.value(), StandardCharsets.UTF_8));
                    }
                    try {
                        c.commitSync();
                    } catch (KafkaException e) {
                        // Rebalance in progress or a generation that just ended: the records
                        // are redelivered to the next owner (at least once).
                    }
                }
            } catch (Throwable t) {
                error = t;
            }
        }

        void leave() throws InterruptedException {
            stop.set(true);
            thread.join(30_000);
            assertTrue(!thread.isAlive(), name + " did not stop");
            if (error != null) {
                throw new AssertionError(name + " failed", error);
            }
        }
    }

    static long lag(Admin admin) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> committed =
                get(admin.listConsumerGroupOffsets(GROUP).partitionsToOffsetAndMetadata());
        Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
        for (int p = 0; p < PARTITIONS; p++) {
            latest.put(new TopicPartition(TOPIC, p), OffsetSpec.latest());
        }
        Map<TopicPartition, ListOffsetsResultInfo> ends = get(admin.listOffsets(latest).all());
        long lag = 0;
        for (var e : ends.entrySet()) {
            OffsetAndMetadata c = committed.get(e.getKey());
            lag += e.getValue().offset() - (c == null ? 0 : c.offset());
        }
        return lag;
    }

    @Test
    void membersComeAndGoWhileAProducerWrites() throws Exception {
        try (Kopd kopd = Kopd.start(dataDir, 2, Map.of("group.initial.rebalance.delay.ms", "0"));
                Admin admin = kopd.admin()) {
            get(admin.createTopics(List.of(new NewTopic(TOPIC, PARTITIONS, (short) 1))).all());
            AtomicReference<Throwable> producerError = new AtomicReference<>();
            Thread producer = new Thread(() -> {
                try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(kopd.producerProps())) {
                    for (int i = 0; i < RECORDS; i++) {
                        byte[] v = Integer.toString(i).getBytes(StandardCharsets.UTF_8);
                        p.send(new ProducerRecord<>(TOPIC, i % PARTITIONS, v, v));
                        if (i % 100 == 0) {
                            Thread.sleep(50);
                        }
                    }
                    p.flush();
                } catch (Throwable t) {
                    producerError.set(t);
                }
            });
            producer.start();
            List<Member> members = new ArrayList<>();
            members.add(new Member(kopd, "m1"));
            members.add(new Member(kopd, "m2"));
            Thread.sleep(1500);
            members.add(new Member(kopd, "m3"));
            Thread.sleep(1500);
            members.remove(0).leave();
            Thread.sleep(1000);
            members.add(new Member(kopd, "m4"));
            producer.join(60_000);
            assertEquals(null, producerError.get());
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (seen.size() < RECORDS || lag(admin) != 0) {
                assertTrue(System.nanoTime() < deadline, "seen " + seen.size() + ", lag " + lag(admin));
                Thread.sleep(200);
            }
            for (Member m : members) {
                m.leave();
            }
            assertEquals(null, conflict.get());
            assertEquals(RECORDS, seen.size());
            assertEquals(0, lag(admin));
            Set<Integer> generations = new HashSet<>(owners.keySet());
            assertTrue(generations.size() >= 3, "rebalances happened: " + generations);
        }
    }
}
