#!/usr/bin/perl
# sisimai's answer for each message file given as an argument, for tests/bounce_holdout.rs.
# Prints one TSV line per failed recipient: file, recipient, reason, status, diagnostic (tabs and
# line breaks flattened, cut to 200 characters). A file where sisimai finds no bounce prints one
# line with an empty recipient and the reason "(none)".
# Uses Sisimai->make (the API of sisimai 4.x, Debian's libsisimai-perl); Sisimai->rise where only
# that exists (sisimai 5).
use strict;
use warnings;
use Sisimai;
binmode STDOUT, ':encoding(UTF-8)';

my $read = Sisimai->can('make') ? 'make' : 'rise';
for my $f (@ARGV) {
    my $v = Sisimai->$read($f, delivered => 1, vacation => 1);
    if (!$v || !@$v) {
        print join("\t", $f, '', '(none)', '', ''), "\n";
        next;
    }
    for my $e (@$v) {
        my $d = $e->diagnosticcode // '';
        $d =~ s/[\t\r\n]+/ /g;
        print join("\t", $f, $e->recipient->address // '', $e->reason // '', $e->deliverystatus // '',
            substr($d, 0, 200)), "\n";
    }
}
