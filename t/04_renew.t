# Short-lived responses are renewed before nextUpdate; when the responder
# stays down, the response is never stapled past its nextUpdate.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 6;

my $V = 8;
RSTest::set_mode('renew', 'good', $V);
my $first = RSTest::wait_for(sub {
    my $h = RSTest::handshake('renew');
    $h->{stapled} && $h->{next_update} - $h->{this_update} == $V && $h
}, 6, 0.2);
ok($first);

# renewed: a newer response shows up while the old one is still valid
my $renewed = RSTest::wait_for(sub {
    my $h = RSTest::handshake('renew');
    $h->{stapled} && $h->{this_update} > $first->{this_update} && [$h, time]
}, $V + 2, 0.2);
ok($renewed && $renewed->[1] < $first->{next_update});

# now the responder stays down: stapled only while valid, then nothing
RSTest::set_mode('renew', 'http500');
my $last = $renewed ? $renewed->[0] : $first;
my ($bad, $seen_after) = (0, 0);
my $end = $last->{next_update} + 3;
while (time < $end) {
    my $h = RSTest::handshake('renew');
    my $now = time;
    # one second of slack for the client's clock reading of a whole-second field
    $bad++ if $h->{stapled} && $h->{next_update} < $now - 1;
    $seen_after++ if $now > $last->{next_update} + 1 && !$h->{stapled};
    sleep 0.25;
}
ok($bad == 0) or warn "# $bad handshakes stapled an expired response\n";
ok($seen_after > 0);
ok(RSTest::curl_cert_status('renew') != 0);
ok(RSTest::error_log() =~ /\[resilient_stapling:error\].*RS0210: OCSP response for CN=renew\.rs\.test,.*expired at .*nothing is stapled/);
RSTest::set_mode('renew', 'good', 8);
