"""Where packets come from, as PacketBatch columns: capture files (pcap, pcapng, gzip), AF_PACKET rings
on interfaces with BPF filters, and paced replay."""
