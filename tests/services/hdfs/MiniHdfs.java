import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileNotFoundException;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.protocol.DatanodeInfo;
import org.apache.hadoop.hdfs.protocol.ExtendedBlock;
import org.apache.hadoop.hdfs.protocol.HdfsConstants.DatanodeReportType;
import org.apache.hadoop.hdfs.protocol.LocatedBlock;
import org.apache.hadoop.hdfs.protocol.LocatedBlocks;
import org.apache.hadoop.hdfs.server.datanode.DataNode;
import org.apache.hadoop.hdfs.server.datanode.FsDatasetTestUtils.MaterializedReplica;
import org.apache.hadoop.hdfs.server.datanode.ReplicaNotFoundException;
import org.apache.hadoop.hdfs.server.namenode.NameNode;
import org.apache.hadoop.util.Time;

/**
 * A real HDFS for the worker's tests: one NameNode and N DataNodes in this JVM
 * (MiniDFSCluster), all on 127.0.0.1, the NameNode on a fixed RPC port so that it keeps its
 * address across restarts. Prints {@code READY hdfs://127.0.0.1:<port>} once the cluster
 * serves, then takes one control command per line on stdin and answers each with one line,
 * {@code OK ...} or {@code ERR <reason>}; a command that (re)starts a node answers once the
 * cluster serves again. Exits when stdin closes, so a test process that dies takes its cluster
 * with it. The commands (DataNodes are numbered from 0 in start order):
 *
 * <ul>
 *   <li>{@code restart-namenode}, {@code stop-namenode}, {@code start-namenode}
 *   <li>{@code stop-datanode <i>}, {@code restart-datanode <i>} (starts a stopped one)
 *   <li>{@code delete-blocks <path>}: deletes the replicas of a file's blocks from the disks of
 *       the running DataNodes; answers {@code OK <replicas deleted>}
 *   <li>{@code shutdown}
 * </ul>
 *
 * <p>Usage: {@code MiniHdfs <namenode-port> <base-dir> <datanodes> <replication> [key=value...]}
 * (the pairs are extra HDFS settings).
 */
public final class MiniHdfs {
  /** How long a (re)started NameNode or DataNode may take to serve again. */
  private static final long READY_TIMEOUT_MS = 60_000;

  private final MiniDFSCluster cluster;
  /** Transfer address (ip:port) of DataNode i as started: stable across its restarts. */
  private final String[] dataNodes;
  /** What restarts DataNode i while it is stopped, else null. */
  private final MiniDFSCluster.DataNodeProperties[] stopped;

  private MiniHdfs(MiniDFSCluster cluster) {
    this.cluster = cluster;
    int n = cluster.getDataNodes().size();
    dataNodes = new String[n];
    stopped = new MiniDFSCluster.DataNodeProperties[n];
    for (int i = 0; i < n; i++) {
      dataNodes[i] = xferAddr(cluster.getDataNodes().get(i));
    }
  }

  /**
   * ip:port a DataNode serves blocks on, as the NameNode reports it. Known from the moment the
   * DataNode starts, unlike getDatanodeId(), which stays null until it registers (and makes
   * MiniDFSCluster.stopDataNode(String) fail meanwhile).
   */
  private static String xferAddr(DataNode dn) {
    InetSocketAddress addr = dn.getXferAddress();
    return addr.getAddress().getHostAddress() + ":" + addr.getPort();
  }

  /** Stops DataNode i (MiniDFSCluster numbers the running ones, which shifts on a stop). */
  private MiniDFSCluster.DataNodeProperties stopDataNode(int i) {
    java.util.List<DataNode> running = cluster.getDataNodes();
    for (int k = 0; k < running.size(); k++) {
      if (xferAddr(running.get(k)).equals(dataNodes[i])) {
        return cluster.stopDataNode(k);
      }
    }
    throw new IllegalStateException("DataNode " + i + " is not running");
  }

  public static void main(String[] args) throws Exception {
    // stdout carries the control protocol only: anything Hadoop prints goes to stderr.
    PrintStream protocol =
        new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
    System.setOut(System.err);
    quietLogs(System.getProperty("minihdfs.log.level", "WARN"));
    if (args.length < 4) {
      System.err.println(
          "usage: MiniHdfs <namenode-port> <base-dir> <datanodes> <replication> [key=value...]");
      System.exit(2);
    }
    int port = Integer.parseInt(args[0]);
    String baseDir = args[1];
    int datanodes = Integer.parseInt(args[2]);

    Configuration conf = new HdfsConfiguration();
    conf.set("hadoop.security.authentication", "simple");
    conf.setBoolean("dfs.permissions.enabled", false);
    conf.setInt("dfs.replication", Integer.parseInt(args[3]));
    conf.set("hadoop.tmp.dir", baseDir + "/tmp");
    // Heartbeats every second (default 3 s): DataNodes find a restarted NameNode sooner.
    conf.setLong("dfs.heartbeat.interval", 1);
    for (int i = 4; i < args.length; i++) {
      int eq = args[i].indexOf('=');
      if (eq <= 0) {
        throw new IllegalArgumentException("not key=value: " + args[i]);
      }
      conf.set(args[i].substring(0, eq), args[i].substring(eq + 1));
    }

    long since = Time.monotonicNow();
    MiniDFSCluster cluster =
        new MiniDFSCluster.Builder(conf, new java.io.File(baseDir))
            .nameNodePort(port)
            .numDataNodes(datanodes)
            .checkExitOnShutdown(false)
            .build();
    MiniHdfs hdfs = new MiniHdfs(cluster);
    hdfs.awaitServing(since, hdfs.running());
    protocol.println("READY hdfs://127.0.0.1:" + cluster.getNameNodePort());
    hdfs.run(new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)), protocol);
  }

  /** Hadoop's log4j output: `level` and above, to stderr, one line each. */
  private static void quietLogs(String level) {
    org.apache.log4j.Logger root = org.apache.log4j.Logger.getRootLogger();
    root.removeAllAppenders();
    root.addAppender(
        new org.apache.log4j.ConsoleAppender(
            new org.apache.log4j.PatternLayout("%d{HH:mm:ss.SSS} %p %c{1}: %m%n"), "System.err"));
    root.setLevel(org.apache.log4j.Level.toLevel(level));
  }

  /** Answers commands until stdin closes or `shutdown`. */
  private void run(BufferedReader in, PrintStream out) throws IOException {
    String line;
    while ((line = in.readLine()) != null) {
      line = line.trim();
      if (line.isEmpty()) {
        continue;
      }
      String[] words = line.split("\\s+", 2);
      String arg = words.length > 1 ? words[1] : "";
      if (words[0].equals("shutdown")) {
        try {
          cluster.shutdown();
        } finally {
          out.println("OK");
          Runtime.getRuntime().halt(0);
        }
      }
      try {
        out.println("OK" + command(words[0], arg));
      } catch (Exception e) {
        e.printStackTrace();
        out.println("ERR " + String.valueOf(e).replace('\n', ' '));
      }
    }
    // The test process is gone (or closed our stdin): nothing is left to shut down cleanly
    // for, and halting skips Hadoop's shutdown hooks, which can take seconds.
    Runtime.getRuntime().halt(0);
  }

  /** Runs one command; returns what follows `OK` in the answer. */
  private String command(String name, String arg) throws Exception {
    switch (name) {
      case "restart-namenode":
        {
          long since = Time.monotonicNow();
          cluster.restartNameNode(0, false);
          awaitServing(since, running());
          return "";
        }
      case "stop-namenode":
        if (cluster.getNameNode() == null) {
          throw new IllegalStateException("the NameNode is already stopped");
        }
        // Returns at once: clients find out by their connections being refused.
        cluster.shutdownNameNode(0);
        return "";
      case "start-namenode":
        if (cluster.getNameNode() != null) {
          throw new IllegalStateException("the NameNode is already running");
        }
        {
          long since = Time.monotonicNow();
          // restartNameNode starts a stopped NameNode too, from the same directories and port.
          cluster.restartNameNode(0, false);
          awaitServing(since, running());
          return "";
        }
      case "stop-datanode":
        {
          int i = dataNodeIndex(arg);
          if (stopped[i] != null) {
            throw new IllegalStateException("DataNode " + i + " is already stopped");
          }
          stopped[i] = stopDataNode(i);
          return "";
        }
      case "restart-datanode":
        {
          int i = dataNodeIndex(arg);
          MiniDFSCluster.DataNodeProperties props =
              stopped[i] != null ? stopped[i] : stopDataNode(i);
          stopped[i] = null;
          long since = Time.monotonicNow();
          // Same transfer and IPC ports: block locations the NameNode holds stay valid.
          cluster.restartDataNode(props, true);
          // With the NameNode stopped, the DataNode registers once start-namenode runs.
          if (cluster.getNameNode() != null) {
            awaitServing(since, Set.of(dataNodes[i]));
          }
          return "";
        }
      case "delete-blocks":
        return " " + deleteBlocks(arg);
      default:
        throw new IllegalArgumentException("unknown command " + name);
    }
  }

  private int dataNodeIndex(String arg) {
    int i = Integer.parseInt(arg.trim());
    if (i < 0 || i >= dataNodes.length) {
      throw new IllegalArgumentException(
          "no DataNode " + i + " (there are " + dataNodes.length + ")");
    }
    return i;
  }

  /**
   * Deletes the block and checksum files of every replica of `path` on the running DataNodes
   * (a disk that lost them); returns how many replicas were deleted. The DataNodes are not
   * told, so a read finds out the way it would on a real cluster.
   */
  private int deleteBlocks(String path) throws IOException {
    if (path.isEmpty()) {
      throw new IllegalArgumentException("delete-blocks needs a path");
    }
    LocatedBlocks blocks = cluster.getNameNodeRpc().getBlockLocations(path, 0, Long.MAX_VALUE);
    if (blocks == null) {
      throw new FileNotFoundException(path);
    }
    int deleted = 0;
    for (LocatedBlock located : blocks.getLocatedBlocks()) {
      ExtendedBlock block = located.getBlock();
      for (DataNode dn : cluster.getDataNodes()) {
        MaterializedReplica replica;
        try {
          replica = cluster.getMaterializedReplica(dn, block);
        } catch (ReplicaNotFoundException e) {
          continue;
        }
        replica.deleteData();
        replica.deleteMeta();
        deleted++;
      }
    }
    return deleted;
  }

  /** Transfer addresses of the running DataNodes. */
  private Set<String> running() {
    Set<String> addrs = new HashSet<>();
    for (DataNode dn : cluster.getDataNodes()) {
      addrs.add(xferAddr(dn));
    }
    return addrs;
  }

  /**
   * Waits until the cluster serves clients: the NameNode is out of safe mode, every running
   * DataNode has registered with it and sent a heartbeat, and `reporters` have sent it a full
   * block report since `since` (Time.monotonicNow()). Safe mode alone is not enough: its
   * threshold is a fraction of the blocks, rounded down, so a NameNode with one block leaves it
   * before any report and would give readers no location for that block. (MiniDFSCluster's
   * waitActive would also wait for stopped DataNodes the NameNode still counts as live.)
   */
  private void awaitServing(long since, Set<String> reporters) throws Exception {
    long deadline = Time.monotonicNow() + READY_TIMEOUT_MS;
    String waitingFor;
    while ((waitingFor = waitingFor(since, reporters)) != null) {
      if (Time.monotonicNow() > deadline) {
        throw new IOException("not serving after " + READY_TIMEOUT_MS / 1000 + "s: " + waitingFor);
      }
      Thread.sleep(50);
    }
  }

  /** What the cluster still waits for before it serves, or null. */
  private String waitingFor(long since, Set<String> reporters) throws IOException {
    NameNode nn = cluster.getNameNode();
    if (nn == null) {
      return "the NameNode is stopped";
    }
    if (nn.isInSafeMode()) {
      return "the NameNode to leave safe mode";
    }
    Map<String, DatanodeInfo> live = new HashMap<>();
    for (DatanodeInfo info : nn.getRpcServer().getDatanodeReport(DatanodeReportType.LIVE)) {
      live.put(info.getXferAddr(), info);
    }
    for (DataNode dn : cluster.getDataNodes()) {
      String addr = xferAddr(dn);
      DatanodeInfo info = live.get(addr);
      if (!dn.isDatanodeFullyStarted() || info == null || info.getCapacity() == 0) {
        return "DataNode " + addr + " to register";
      }
      if (reporters.contains(addr) && info.getLastBlockReportMonotonic() < since) {
        return "DataNode " + addr + " to report its blocks";
      }
    }
    return null;
  }
}
