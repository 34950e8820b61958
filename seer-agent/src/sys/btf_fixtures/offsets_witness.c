/* An independent reading of the kernel offsets seer resolves from BTF: bpftool dumps the
 * running kernel's BTF as C (vmlinux.h), the C compiler computes offsetof. Compiled and run by
 * the test `offsets_match_an_independent_reading_of_this_kernel` (seer-agent/src/sys/btf.rs). */
#include "vmlinux.h"
#define off(t, f) ((unsigned long)__builtin_offsetof(struct t, f))
int printf(const char *, ...);
int main(void) {
    printf("skc_family=%lu\n", off(sock, __sk_common.skc_family));
    printf("skc_state=%lu\n", off(sock, __sk_common.skc_state));
    printf("skc_num=%lu\n", off(sock, __sk_common.skc_num));
    printf("skc_dport=%lu\n", off(sock, __sk_common.skc_dport));
    printf("sk_protocol=%lu\n", off(sock, sk_protocol));
    printf("sk_ack_backlog=%lu\n", off(sock, sk_ack_backlog));
    printf("sk_max_ack_backlog=%lu\n", off(sock, sk_max_ack_backlog));
    printf("sk_socket=%lu\n", off(sock, sk_socket));
    printf("socket_file=%lu\n", off(socket, file));
    printf("file_f_inode=%lu\n", off(file, f_inode));
    printf("inode_i_ino=%lu\n", off(inode, i_ino));
    printf("tcp_rcv_nxt=%lu\n", off(tcp_sock, rcv_nxt));
    printf("tcp_copied_seq=%lu\n", off(tcp_sock, copied_seq));
    printf("tcp_write_seq=%lu\n", off(tcp_sock, write_seq));
    printf("tcp_snd_una=%lu\n", off(tcp_sock, snd_una));
    printf("tcp_bytes_received=%lu\n", off(tcp_sock, bytes_received));
    printf("tcp_bytes_sent=%lu\n", off(tcp_sock, bytes_sent));
    printf("tcp_lsndtime=%lu\n", off(tcp_sock, lsndtime));
    printf("tcp_lrcvtime=%lu\n", off(tcp_sock, inet_conn.icsk_ack.lrcvtime));
    printf("skc_daddr=%lu\n", off(sock, __sk_common.skc_daddr));
    printf("skc_v6_daddr=%lu\n", off(sock, __sk_common.skc_v6_daddr));
    printf("sk_type=%lu\n", off(sock, sk_type));
    printf("file_private_data=%lu\n", off(file, private_data));
    printf("inode_i_mode=%lu\n", off(inode, i_mode));
    printf("socket_sk=%lu\n", off(socket, sk));
    printf("tcp_segs_in=%lu\n", off(tcp_sock, segs_in));
    printf("task_tgid=%lu\n", off(task_struct, tgid));
    return 0;
}
