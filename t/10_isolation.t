# Bounded parallelism: at most ResilientStaplingMaxFetches (8 here) fetches in
# flight in the whole server, at most half of them (4) to one responder. The
# second CA's responder hangs for five certificates; the first CA's
# certificates are fetched on time meanwhile.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 5;

my $t0 = time;
sleep 8;  # the hung fetches time out (2 s) and are retried (1-2 s) meanwhile

my (@hang, @all);
for my $leaf (RSTest::leaves()) {
    # only this test's window: earlier tests restarted the server, and an old
    # generation's children finish their fetches with their own slot table
    # a fetch slot is held for a round: a GET and, when it fails, a POST at
    # once. The responder notes a request's end when it sees the client go
    # (polled every 50 ms), so the POST of a round may start just before
    # its GET is noted as ended: they are one round, one interval.
    my @iv;
    for my $r (grep { $_->{t} >= $t0 + 1 } @{ RSTest::requests($leaf) }) {
        my $end = $r->{end} // time;
        if (@iv && ($r->{method} // '') eq 'POST' && $iv[-1][2] eq 'GET'
            && $r->{t} <= $iv[-1][1] + 0.3) {
            $iv[-1][1] = $end;
            $iv[-1][2] = 'POST';
            next;
        }
        push @iv, [$r->{t}, $end, $r->{method} // ''];
    }
    push @all, @iv;
    push @hang, @iv if $leaf =~ /^ca2-hang/;
}
sub max_overlap {
    my @ev = sort { $a->[0] <=> $b->[0] || $a->[1] <=> $b->[1] }
             map { ([$_->[0], 1], [$_->[1], -1]) } @_;
    my ($cur, $max) = (0, 0);
    for (@ev) { $cur += $_->[1]; $max = $cur if $cur > $max; }
    return $max;
}
my $hang_max = max_overlap(@hang);
my $all_max = max_overlap(@all);
print "# hung rounds: " . scalar(@hang) . ", at most $hang_max at once; all requests at most $all_max at once\n";
ok(@hang >= 5);
ok($hang_max <= 4);
ok($all_max <= 8);

# the first CA kept renewing on time: "count" (6 s responses) every ~3 s
my @count = grep { $_->{t} >= $t0 } @{ RSTest::requests('count') };
my @gaps = map { $count[$_]{t} - $count[$_ - 1]{t} } 1 .. $#count;
printf "# count renewals during the hang: %d, gaps %s\n", scalar @count,
    join(' ', map { sprintf '%.1f', $_ } @gaps);
ok(@count >= 2 && !grep { $_ > 4.5 } @gaps);

# the second CA's good certificate gets its turn too
ok(RSTest::wait_for(sub { RSTest::handshake('ca2-good')->{stapled} }, 8));
RSTest::set_mode("ca2-hang$_", 'good') for 1 .. 5;
