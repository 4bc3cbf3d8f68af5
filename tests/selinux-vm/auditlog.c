/*
 * auditlog: the guest's audit daemon, just enough of one.
 *
 * Without a process registered for the audit netlink socket the kernel
 * prints audit records (the AVC denials this suite looks for) through a
 * rate-limited printk, and drops most of them when many come at once. This
 * registers itself as the audit daemon and appends every record, one per
 * line, to the file named by its argument and to stdout, so none is lost.
 */
#include <linux/audit.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: auditlog FILE\n");
		return 2;
	}
	FILE *out = fopen(argv[1], "a");
	int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT);
	if (!out || fd < 0) {
		perror("auditlog");
		return 1;
	}
	struct {
		struct nlmsghdr header;
		struct audit_status status;
	} set;
	memset(&set, 0, sizeof set);
	set.header.nlmsg_len = sizeof set;
	set.header.nlmsg_type = AUDIT_SET;
	set.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	set.status.mask = AUDIT_STATUS_ENABLED | AUDIT_STATUS_PID;
	set.status.enabled = 1;
	set.status.pid = getpid();
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	if (sendto(fd, &set, sizeof set, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
		perror("auditlog: AUDIT_SET");
		return 1;
	}
	/* MAX_AUDIT_MESSAGE_LENGTH (8970) is in libaudit, not the uapi headers. */
	static char buf[8970 + NLMSG_HDRLEN];
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
		if (n < (ssize_t)NLMSG_HDRLEN)
			continue;
		struct nlmsghdr *h = (struct nlmsghdr *)buf;
		if (h->nlmsg_type == NLMSG_ERROR || h->nlmsg_type == NLMSG_DONE)
			continue;
		/* Audit records do not always set nlmsg_len right: trust recv. */
		buf[n] = '\0';
		fprintf(out, "type=%u %s\n", h->nlmsg_type, (char *)NLMSG_DATA(h));
		fflush(out);
		printf("type=%u %s\n", h->nlmsg_type, (char *)NLMSG_DATA(h));
		fflush(stdout);
	}
}
